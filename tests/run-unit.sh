#!/usr/bin/env bash
# run-unit.sh - runs cmocka unit test binaries and sums their results.
#
#     tests/run-unit.sh build/tests/test_proto build/tests/test_image ...
#
# Each binary's own cmocka output is shown as it runs.  The last line is
#     unit: N passed, N failed[, N skipped]
# summed from cmocka's "[  PASSED  ] N test(s)." / "[  FAILED  ] N test(s)"
# / "[  SKIPPED ] N test(s)" lines.  A binary that crashes, is killed, is
# missing, or whose exit status disagrees with the failures it reported
# (a sanitizer report at exit, say) counts as one failed test on top of what
# it reported, and is named on a line of its own, so the summary can never
# read "0 failed" when something went wrong.  Exit status: 0 only if nothing
# failed and nothing crashed.
set -u

if [ "$#" -eq 0 ]; then
    echo "usage: $0 TEST_BINARY..." >&2
    exit 2
fi

# cmocka's plain-text output is what we parse, whatever the caller's setting.
export CMOCKA_MESSAGE_OUTPUT=STDOUT
# Under UBSan, make a report fatal so it cannot scroll past unnoticed.
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

passed=0
failed=0
skipped=0
broken=()

for bin in "$@"; do
    echo "== $bin"
    if [ ! -x "$bin" ]; then
        echo "run-unit: $bin is missing or not executable"
        broken+=("$bin (missing)")
        failed=$((failed + 1))
        continue
    fi
    out=$(mktemp)
    # Let the output stream as it comes; keep a copy to parse.
    "$bin" 2>&1 | tee "$out"
    status=${PIPESTATUS[0]}

    p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | tail -n 1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | tail -n 1)
    s=$(sed -n 's/^\[  SKIPPED \] \([0-9][0-9]*\) test(s).*/\1/p' "$out" | tail -n 1)
    ran=$(sed -n 's/^\[==========\] \([0-9][0-9]*\) test(s) run\..*/\1/p' "$out" | tail -n 1)
    rm -f "$out"
    p=${p:-0}
    f=${f:-0}
    s=${s:-0}
    passed=$((passed + p))
    failed=$((failed + f))
    skipped=$((skipped + s))

    # cmocka exits with the number of failed tests; anything else means the
    # binary did not finish normally (signal, abort, sanitizer, no summary).
    if [ -z "$ran" ]; then
        broken+=("$bin (no cmocka summary, exit status $status)")
        failed=$((failed + 1))
    elif [ "$status" -ne "$f" ]; then
        if [ "$status" -ge 128 ]; then
            why="killed by signal $((status - 128))"
        else
            why="exit status $status but $f failed test(s) reported"
        fi
        broken+=("$bin ($why)")
        failed=$((failed + 1))
    fi
done

for b in "${broken[@]+"${broken[@]}"}"; do
    echo "unit: CRASHED: $b"
done
summary="unit: $passed passed, $failed failed"
if [ "$skipped" -gt 0 ]; then
    summary="$summary, $skipped skipped"
fi
echo "$summary"
[ "$failed" -eq 0 ]

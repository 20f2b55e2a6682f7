#!/bin/sh
# run-integration.sh - the black-box suite (pytest, real sandboxes in both
# backends, a real gateway), spread over parallel workers.
#
#     tests/run-integration.sh [PYTEST_ARGS...]
#
# Workers: FORGEBOX_TEST_WORKERS (default: the number of CPUs, at most 4).
# Tests of one file stay on one worker (--dist loadfile), so a file's
# gateway fixture starts once.  Each worker is its own process and so has
# its own runtime directory (conftest.py), and the leak check after every
# test tells its sandboxes from the other workers'.
#
# The JUnit reports go to build/integration-junit*.xml for run-all.sh.
# With FORGEBOX_SANITIZED=1 (make sanitize-integration) sanitizer reports
# are written under build-san/sanitizer/, and any report fails the run even
# if the test that caused it passed.
set -u
cd "$(dirname "$0")/.."
mkdir -p build
junit=build/integration-junit.xml
rm -f build/integration-junit*.xml
# What the workers saw, for the secret-hygiene check that runs after them.
export FORGEBOX_EVIDENCE_DIR="$(pwd)/build/test-evidence"
rm -rf "$FORGEBOX_EVIDENCE_DIR"; mkdir -p "$FORGEBOX_EVIDENCE_DIR"

workers=${FORGEBOX_TEST_WORKERS:-$(nproc)}
[ "$workers" -gt 4 ] && workers=4
par=""
if [ "$workers" -gt 1 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
    par="-n $workers --dist loadfile"
fi

if [ "${FORGEBOX_SANITIZED:-0}" = 1 ]; then
    sandir=$(pwd)/build-san/sanitizer
    rm -rf "$sandir"; mkdir -p "$sandir"
    export ASAN_OPTIONS="log_path=$sandir/asan:abort_on_error=1:detect_leaks=0"
    export UBSAN_OPTIONS="log_path=$sandir/ubsan:print_stacktrace=1:halt_on_error=1"
fi

# shellcheck disable=SC2086
/usr/bin/python3 -m pytest -q -p no:cacheprovider $par --junitxml="$junit" \
    -m "not serial" tests/integration clients/python "$@"
rc=$?
# Then, with nothing else running: the tests that change host-wide state
# (marked serial), and the check that nothing secret leaked anywhere in the
# run, over what every worker saw.  Exit status 5 is "nothing selected".
/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml=build/integration-junit-serial.xml \
    -m serial tests/integration "$@"
s=$?; [ $s -ne 0 ] && [ $s -ne 5 ] && rc=1
/usr/bin/python3 -m pytest -q -p no:cacheprovider --junitxml=build/integration-junit-hygiene.xml \
    tests/hygiene || rc=1

if [ "${FORGEBOX_SANITIZED:-0}" = 1 ]; then
    reports=$(find "$sandir" -type f | wc -l)
    if [ "$reports" -gt 0 ]; then
        echo "run-integration: $reports sanitizer report(s):"
        for f in "$sandir"/*; do echo "== $f"; head -n 60 "$f"; done
        rc=1
    else
        echo "run-integration: no sanitizer reports"
    fi
fi
exit $rc

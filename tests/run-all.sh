#!/bin/sh
# Runs every test: cmocka unit tests, then the black-box integration suite
# (pytest, real sandboxes in both backends).  Prints one summary line
#   N passed, N failed[, N skipped]
# last, and writes it to build/test-summary.txt for .ci/run.
set -u
cd "$(dirname "$0")/.."
mkdir -p build
summary=build/test-summary.txt
echo "0 passed, 1 failed" > "$summary"   # until proven otherwise

unit_log=build/unit.log
unit_bins=$(find build/tests -maxdepth 1 -type f -name 'test_*' ! -name '*.*' | sort)
# shellcheck disable=SC2086
./tests/run-unit.sh $unit_bins > "$unit_log" 2>&1
unit_rc=$?
cat "$unit_log"

./tests/run-integration.sh "$@"
int_rc=$?

/usr/bin/python3 - "$unit_log" "$summary" <<'PY'
import re, sys, xml.etree.ElementTree as ET
unit_log, out = sys.argv[1:3]
passed = failed = skipped = 0
m = None
for line in open(unit_log, errors="replace"):
    m = re.match(r"unit: (\d+) passed, (\d+) failed", line) or m
if m:
    passed += int(m.group(1)); failed += int(m.group(2))
else:
    failed += 1   # the unit runner did not finish
# The suite proper and the hygiene check that runs after it: both must
# have reported, or the run counts as failed.
for junit in ("build/integration-junit.xml", "build/integration-junit-serial.xml",
              "build/integration-junit-hygiene.xml"):
    try:
        root = ET.parse(junit).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        for s in suites:
            t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
            passed += t - f - e - sk; failed += f + e; skipped += sk
    except Exception:
        failed += 1   # pytest did not produce a report
line = f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
open(out, "w").write(line + "\n")
print(line)
PY
[ "$unit_rc" -eq 0 ] && [ "$int_rc" -eq 0 ]

#!/bin/sh
# ForgeBox benchmarks: prints a table of measurements, each against a
# baseline measured in the same run.  Usage: bench/run.sh [ROUNDS]
# (make bench builds what it needs first).  Needs root, like sandboxes do.
set -eu
cd "$(dirname "$0")/.."
/usr/bin/python3 bench/bench.py "$@"
/usr/bin/python3 bench/snapshot.py
/usr/bin/python3 bench/pool.py
/usr/bin/python3 bench/gateway.py
/usr/bin/python3 bench/api_exec.py
/usr/bin/python3 bench/egress.py
/usr/bin/python3 bench/tasks.py

#!/bin/sh
# `make run`: the main job, shown for real.  An AI-style Python program is
# copied into a fresh microVM, run there, and its output shown; the VM is
# gone afterwards.
set -eu
cd "$(dirname "$0")/.."
echo "== forgebox doctor"
./build/forgebox doctor || true
echo
echo "== forgebox run --backend vm --put examples/ai_task.py:/workspace/task.py -- python3 task.py"
./build/forgebox run --backend vm --memory 256 --timeout 60 \
    --put examples/ai_task.py:/workspace/task.py -- python3 task.py
echo
echo "== the same in the jail backend (namespaces, milliseconds to start)"
./build/forgebox run --backend jail --timeout 60 \
    --put examples/ai_task.py:/workspace/task.py -- python3 task.py

"""Task engine overhead (bench/run.sh runs this after the gateway table).

  a task with N tool calls         POST /v1/tasks against an instant scripted
                                   provider (tests/tools/fake_llm.py): N turns
                                   of one `bash {"command": "true"}` each, then
                                   a text answer; timed from the request to the
                                   end of the event stream (the task has ended)
  the same N execs through the API POST /v1/sandboxes, N x POST .../exec of
                                   `bash -c true`, DELETE: what the task's tool
                                   calls amount to without the engine

The ratio is the engine's cost per task - provider round trips (on
loopback, to a server that answers at once), transcript events, stored
usage, the authorisation and audit of every call - over doing the same work
by hand.  The issue's goal is 1.2x or less.  Median of ROUNDS (default 5).

    /usr/bin/python3 bench/tasks.py [N] [ROUNDS]
"""
import os
import shutil
import statistics
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
os.environ.setdefault("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))

from fake_llm import FakeLLM  # noqa: E402
from gateway_fixtures import Gateway  # noqa: E402

KEY = "sk-bench-0000000000000000"


def config(url, n):
    return f"""\
providers:
  bench:
    kind: openai
    base_url: {url}/v1
    api_key: ${{FB_BENCH_PROVIDER_KEY}}
tasks:
  max_turns: {n + 10}
  max_tool_calls: {n + 10}
"""


def one_task(c, fake, n):
    fake.script = [{"tool_calls": [{"id": f"c{i}", "name": "bash", "arguments": '{"command":"true"}'}],
                    "pieces": 1000}
                   for i in range(n)] + [{"text": "done"}]
    t0 = time.perf_counter()
    t = c.create_task("bench", provider="bench", model="m1", tools=["bash"], backend="jail",
                      limits={"max_turns": n + 1, "max_tool_calls": n})
    for _ in c.task_events(t["id"]):
        pass
    took = time.perf_counter() - t0
    t = c.get_task(t["id"])
    assert t["state"] == "succeeded" and t["usage"]["tool_calls"] == n, t
    if t.get("sandbox_id"):          # kept for follow-ups: not part of the measurement
        try:
            c.delete_sandbox(t["sandbox_id"])
        except Exception:
            pass
    return took


def by_hand(c, n):
    t0 = time.perf_counter()
    s = c.create_sandbox(backend="jail")
    for _ in range(n):
        r = c.exec(s["id"], ["bash", "-c", "true"])
        assert r["exit_code"] == 0
    c.delete_sandbox(s["id"])
    return time.perf_counter() - t0


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with FakeLLM(key=KEY, models={"m1"}) as fake:
        g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=100000", "limits.rate_burst=100000",
                              "log_level=warn"],
                    config=config(fake.url, n), env={"FB_BENCH_PROVIDER_KEY": KEY})
        g.init()
        g.start()
        try:
            c = g.admin()
            one_task(c, fake, 1)             # warm up both paths
            by_hand(c, 1)
            task_t, hand_t = [], []
            for _ in range(rounds):           # interleaved, so drift hits both alike
                task_t.append(one_task(c, fake, n))
                hand_t.append(by_hand(c, n))
        finally:
            g.close()
            shutil.rmtree(g.dir, ignore_errors=True)
    task, hand = statistics.median(task_t), statistics.median(hand_t)
    print()
    print(f"{'task engine measurement':40} {'forgebox':>10} {'baseline':>10} {'ratio':>7}  baseline is")
    print(f"{f'task with {n} tool calls (instant model)':40} {task*1000:8.1f}ms {hand*1000:8.1f}ms "
          f"{task/hand:6.2f}x  sandbox + the same {n} execs + delete, through the API")
    print(f"{'engine overhead per tool call':40} {(task-hand)/n*1000:8.2f}ms")


if __name__ == "__main__":
    main()

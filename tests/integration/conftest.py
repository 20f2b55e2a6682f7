"""Shared fixtures for the black-box tests of `forgebox run`.

Every test drives the real binaries: build/forgebox starts a real sandbox
(QEMU microvm or namespace jail) from the real guest image in build/image.
Nothing is mocked.  Tests that apply to both backends take the `backend`
fixture and run once per backend.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FORGEBOX = os.environ.get("FORGEBOX_BIN", os.path.join(ROOT, "build", "forgebox"))
IMAGE = os.environ.get("FORGEBOX_IMAGE", os.path.join(ROOT, "build", "image"))
# Each test session gets its own runtime directory, so that the leak check
# below can tell this session's sandboxes from anyone else's on the host.
RUN_DIR = os.environ.get("FORGEBOX_RUN_DIR", f"/run/forgebox-test-{os.getpid()}")

# Exit codes documented in docs/cli.md.
EXIT_USAGE = 2
EXIT_OOM = 123
EXIT_TIMEOUT = 124
EXIT_SANDBOX = 125
EXIT_NOEXEC = 126
EXIT_NOTFOUND = 127

BACKENDS = ["jail", "vm"]


def pytest_configure(config):
    # tests/run-integration.sh runs these alone, after the parallel workers.
    config.addinivalue_line("markers", "serial: changes host-wide state (core_pattern, ...); "
                                       "runs with no other test at the same time")


@pytest.fixture(scope="session", autouse=True)
def session_run_dir():
    yield RUN_DIR
    # The jails' shared read-only root (src/sandbox/jailroot.c) is a mount
    # under the run dir: detached first, so that rmtree never walks into it.
    subprocess.run(["umount", "-R", "-l", os.path.join(RUN_DIR, "jail-root")],
                   stderr=subprocess.DEVNULL, check=False)
    shutil.rmtree(RUN_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def state_dir():
    with tempfile.TemporaryDirectory(prefix="fbx-state-") as d:
        yield d


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def stdout(self):
        return self.out.decode("utf-8", "replace")

    @property
    def stderr(self):
        """stderr without ForgeBox's one-line notes (the TCG warning)."""
        lines = self.err.decode("utf-8", "replace").splitlines(keepends=True)
        return "".join(l for l in lines if not l.startswith("forgebox: note:"))

    def __repr__(self):
        return f"Result(rc={self.rc}, out={self.out[:400]!r}, err={self.err[:400]!r})"


def forgebox(*args, input=None, timeout=300, env=None, image=None, state=None):
    """Runs build/forgebox with args and returns a Result."""
    argv = [FORGEBOX] + list(args)
    full_env = dict(os.environ)
    full_env["FORGEBOX_IMAGE"] = image or IMAGE
    full_env["FORGEBOX_RUN_DIR"] = RUN_DIR
    if state:
        full_env["FORGEBOX_STATE_DIR"] = state
    if env:
        full_env.update(env)
    proc = subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout, env=full_env,
                          stdin=None if input is not None else subprocess.DEVNULL)
    return Result(proc)


@pytest.fixture
def run(state_dir):
    """run(backend, *forgebox_run_args, '--', cmd...) -> Result"""
    def _run(backend, *args, input=None, timeout=300, image=None):
        return forgebox("run", "--backend", backend, *args, input=input, timeout=timeout,
                        image=image, state=state_dir)
    return _run


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def foreign_ids():
    """Sandboxes alive under another manager's runtime directory."""
    ids = set()
    for d in glob.glob("/run/forgebox*"):
        if os.path.abspath(d) != os.path.abspath(RUN_DIR) and os.path.isdir(d):
            ids |= {p for p in os.listdir(d) if p.startswith("sb-")}
    return ids


def leftovers():
    """What a finished sandbox must not leave behind on the host: its
    runtime directory, its cgroups, its QEMU process."""
    found = []
    if os.path.isdir(RUN_DIR):
        found += [p for p in os.listdir(RUN_DIR) if p.startswith("sb-")]
    foreign = foreign_ids()
    for hier in ("/sys/fs/cgroup/forgebox", "/sys/fs/cgroup/memory/forgebox",
                 "/sys/fs/cgroup/pids/forgebox", "/sys/fs/cgroup/cpu/forgebox"):
        found += [p for p in glob.glob(hier + "/sb-*") if os.path.basename(p) not in foreign]
    ps = subprocess.run(["ps", "-eo", "pid,args"], stdout=subprocess.PIPE, text=True).stdout
    for line in ps.splitlines():
        if "qemu-system" in line and "forgebox-sb-" in line:
            sid = line.split("forgebox-sb-", 1)[1].split()[0].split(",")[0]
            if "sb-" + sid not in foreign:
                found.append(line)
    return found


def settled_leftovers(before=(), seconds=10):
    """leftovers() beyond `before`, looked at again for a while before
    being believed.  Other managers on the host (parallel workers, other
    checkouts) start and end sandboxes at any moment; one caught between
    its QEMU starting and its runtime directory appearing (or the reverse
    at teardown) is not ours.  A real leak stays."""
    before = set(before)
    after = set(leftovers()) - before
    deadline = time.monotonic() + seconds
    while after and time.monotonic() < deadline:
        time.sleep(0.5)
        after = set(leftovers()) - before
    return sorted(after)


@pytest.fixture(autouse=True)
def no_leftovers():
    """Every test must leave the host as it found it."""
    before = set(leftovers())
    yield
    after = settled_leftovers(before)
    assert not after, f"sandbox resources left behind: {after}"

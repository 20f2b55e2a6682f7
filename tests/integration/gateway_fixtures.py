"""Starting real `forgebox serve` processes for the gateway tests.

A Gateway is a real daemon on a loopback port with its own state directory,
bootstrapped with `forgebox admin init`; the tests talk to it only through
the project's Python client (clients/python).
"""
import atexit
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import FORGEBOX, IMAGE, RUN_DIR

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import forgebox_client  # noqa: E402

FIRST_PASSWORD = "correct horse battery staple"

# Everything the gateway tests see, for the secret-hygiene check that runs
# last (test_zz_secret_hygiene.py): every response body, every secret that
# was created (passwords, keys), every gateway's log and state directory.
RECORDED = []        # (method, path, status, body bytes)
SECRETS = {FIRST_PASSWORD}
GATEWAYS = []

# Under parallel workers (tests/run-integration.sh) each worker writes what
# it saw to EVIDENCE_DIR when it exits, and the hygiene check runs once after
# every worker is done, over all of it (tests/hygiene/).  The gateways' own
# directories (logs, store files) are then kept for that check to read.
EVIDENCE_DIR = os.environ.get("FORGEBOX_EVIDENCE_DIR")


def _dump_evidence():
    for g in GATEWAYS:
        g.stop()
    if not (GATEWAYS or RECORDED):
        return
    doc = {
        "secrets": sorted(SECRETS),
        "recorded": [[m, p, st, base64.b64encode(bytes(b)).decode()] for m, p, st, b in RECORDED],
        "gateways": [{"dir": g.dir, "state": g.state, "log": g.log_path} for g in GATEWAYS],
    }
    path = os.path.join(EVIDENCE_DIR, f"evidence-{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.rename(path + ".tmp", path)


if EVIDENCE_DIR:
    atexit.register(_dump_evidence)


class _RecordingResponse:
    """Wraps http.client's response: whatever the client reads is kept."""

    def __init__(self, resp, method, path):
        self._resp, self._method, self._path = resp, method, path
        self._buf = bytearray()
        RECORDED.append((method, path, resp.status, self._buf))

    def read(self, *a):
        data = self._resp.read(*a)
        self._buf += data
        return data

    def readline(self, *a):
        data = self._resp.readline(*a)
        self._buf += data
        return data

    def __getattr__(self, name):
        return getattr(self._resp, name)


class RecordingClient(forgebox_client.Client):
    def _open(self, method, path, body=None, headers=None, timeout=None):
        conn, resp = super()._open(method, path, body=body, headers=headers, timeout=timeout)
        return conn, _RecordingResponse(resp, method, path)

    def create_key(self, *a, **kw):
        k = super().create_key(*a, **kw)
        SECRETS.add(k["key"])
        return k

    def create_user(self, *a, **kw):
        SECRETS.add(kw.get("password") or a[1])
        return super().create_user(*a, **kw)


def declared_too_large(client, method, path, length=2 << 20):
    """A request whose headers declare a body of `length` bytes, of which
    only 4 KiB are sent, through a raw socket as `client` would send it:
    (status line and headers, body) of the answer.  The gateway refuses
    an oversized body from its headers alone and may close the connection
    at once, so a client that insists on sending all of it first can meet
    a broken pipe instead of the 413 (http.client does: a flaky test)."""
    s = socket.create_connection((client._host, client._port), timeout=30)
    auth = b"Authorization: Bearer " + client._key.reveal().encode() + b"\r\n" if client._key else b""
    try:
        s.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method.encode(), path.encode()) + auth +
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % length + b"x" * 4096)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    """settings: --set KEY=VALUE strings.  config: the text of a
    forgebox.yaml (written to the gateway's directory, passed as --config),
    for what --set cannot say (providers:, lists).  env: variables added to
    the daemon's environment (a provider key referred to as ${VAR}); their
    values count as secrets for the hygiene check."""

    def __init__(self, settings=(), state_dir=None, config=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="fbx-gw-")
        if not EVIDENCE_DIR:   # nobody will read it after this process
            atexit.register(shutil.rmtree, self.dir, True)
        self.state = state_dir or os.path.join(self.dir, "state")
        self.log_path = os.path.join(self.dir, "gateway.log")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = list(settings)
        self.config_path = None
        if config is not None:
            self.config_path = os.path.join(self.dir, "forgebox.yaml")
            with open(self.config_path, "w") as f:
                f.write(config)
        self.env = dict(env or {})
        # Every value given in the environment is treated as a secret, except
        # plain numbers (FORGEBOX_KEYCACHE_TTL_MS=60000 is a setting, and a
        # number turns up by chance in any log line's nanoseconds).
        SECRETS.update(v for v in self.env.values() if v and not v.isdigit())
        self.proc = None
        self.admin_key = None
        GATEWAYS.append(self)

    def init(self):
        env = dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD)
        p = subprocess.run([FORGEBOX, "admin", "init", "--state-dir", self.state],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        self.init_stdout = p.stdout.decode()
        self.admin_key = self.init_stdout.strip().splitlines()[-1]
        SECRETS.add(self.admin_key)
        return p

    def start(self):
        argv = [FORGEBOX, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state,
                "--image", IMAGE, "--set", f"run_dir={RUN_DIR}"]
        if self.config_path:
            argv += ["--config", self.config_path]
        for kv in self.settings:
            argv += ["--set", kv]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, **self.env))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited: {self.read_log()}")
            try:
                if self.client().healthz()["status"] == "ok":
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("gateway did not come up")

    def client(self, key=None):
        return RecordingClient(self.url, api_key=key, timeout=120)

    def admin(self):
        return self.client(self.admin_key)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=120)
        if getattr(self, "log", None):
            self.log.close()
        return self.proc.returncode if self.proc else None

    def close(self):
        """Stops the daemon; the directory is kept for the hygiene check
        (tests/hygiene/ or test_zz_secret_hygiene.py), which removes it."""
        self.stop()


def start_gateway(settings=()):
    """A gateway with these settings (KEY=VALUE), initialised and listening."""
    g = Gateway(settings=list(settings))
    g.init()
    g.start()
    return g


def finish(g):
    """Stops g and checks that it stopped cleanly: exit 0, no sanitizer report."""
    rc = g.stop()
    log = g.read_log()
    assert "Sanitizer" not in log, log[-4000:]
    assert rc == 0, log[-4000:]


def kill_under_load(g, request, clients, seconds):
    """Runs `clients` threads, each calling request(client, i) -> (status,
    headers) in a loop on its own admin client, SIGKILLs the gateway after
    `seconds`, and returns the X-Request-Id of every request answered 200
    before the kill."""
    import threading
    answered, stop = [], threading.Event()

    def client(i):
        c = g.admin()
        while not stop.is_set():
            try:
                status, hdr = request(c, i)
            except Exception:
                return
            if status == 200:
                answered.append({k.lower(): v for k, v in hdr.items()}["x-request-id"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    g.proc.kill()
    g.proc.wait()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    g.log.close()
    return answered


def qemu_children(parent_pid):
    """The pids of the QEMU processes whose parent is parent_pid."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{p}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if cmd.startswith(b"qemu-system") and ppid == parent_pid:
            pids.append(int(p))
    return pids


def assert_sandbox_processes_gone(sid, timeout_s=10):
    """Every cgroup of sandbox sid exists and is, or within timeout_s
    becomes, empty: nothing of it runs on."""
    import glob
    procs = glob.glob(f"/sys/fs/cgroup/*/forgebox/{sid}/cgroup.procs")
    assert procs, sid
    for p in procs:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and open(p).read().strip():
            time.sleep(0.05)
        assert open(p).read().strip() == "", (sid, p)


@pytest.fixture(scope="module")
def pg():
    """A real PostgreSQL for a test module (pg_fixture.PgServer, loopback
    only); its password is one of the secrets the hygiene check hunts for.
    A module imports it by name: `from gateway_fixtures import pg`."""
    from pg_fixture import PgServer
    srv = PgServer()
    SECRETS.add(srv.password)
    yield srv
    srv.close()

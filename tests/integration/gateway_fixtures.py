"""Starting real `forgebox serve` processes for the gateway tests.

A Gateway is a real daemon on a loopback port with its own state directory,
bootstrapped with `forgebox admin init`; the tests talk to it only through
the project's Python client (clients/python).
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from conftest import FORGEBOX, IMAGE, RUN_DIR

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "clients", "python"))
import forgebox_client  # noqa: E402

FIRST_PASSWORD = "correct horse battery staple"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Gateway:
    def __init__(self, settings=(), state_dir=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="fbx-gw-")
        self.state = state_dir or os.path.join(self.tmp.name, "state")
        self.log_path = os.path.join(self.tmp.name, "gateway.log")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = list(settings)
        self.proc = None
        self.admin_key = None
        self.responses = []      # every body a test saw, for the secret check

    def init(self):
        env = dict(os.environ, FORGEBOX_FIRST_PASSWORD=FIRST_PASSWORD)
        p = subprocess.run([FORGEBOX, "admin", "init", "--state-dir", self.state],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        assert p.returncode == 0, p.stderr
        self.init_stdout = p.stdout.decode()
        self.admin_key = self.init_stdout.strip().splitlines()[-1]
        return p

    def start(self):
        argv = [FORGEBOX, "serve", "--listen", f"127.0.0.1:{self.port}", "--state-dir", self.state,
                "--image", IMAGE, "--set", f"run_dir={RUN_DIR}"]
        for kv in self.settings:
            argv += ["--set", kv]
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
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
        return forgebox_client.Client(self.url, api_key=key, timeout=120)

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
        self.stop()
        self.tmp.cleanup()

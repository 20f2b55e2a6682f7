"""The systemd units in deploy/systemd are part of what we ship: systemd
itself must accept them, and every forgebox verb and flag their ExecStart
lines use must exist (a unit that names a flag the binary does not know
starts nothing).  docs/deployment.md describes them."""
import glob
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import FORGEBOX, ROOT

UNITS = sorted(glob.glob(os.path.join(ROOT, "deploy", "systemd", "*.service")))


def exec_start(text):
    """The ExecStart command of a unit, continuation lines joined, as argv."""
    joined = re.sub(r"\\\n\s*", " ", text)
    m = re.search(r"^ExecStart=(.+)$", joined, re.M)
    assert m, "no ExecStart"
    return m.group(1).split()


def test_the_three_units_exist():
    assert [os.path.basename(u) for u in UNITS] == [
        "forgebox-gateway.service", "forgebox-node.service", "forgebox.service"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=os.path.basename)
def test_systemd_accepts_the_unit(unit, tmp_path):
    # verify insists that ExecStart's binary exists: point it at the build.
    text = open(unit).read().replace("/usr/local/bin/forgebox", FORGEBOX)
    copy = tmp_path / os.path.basename(unit)
    copy.write_text(text)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                       capture_output=True, text=True, timeout=60)
    # systemd reports a line it ignores on stderr but still exits 0: any
    # output at all is a defect of the unit.
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r


@pytest.mark.parametrize("unit", UNITS, ids=os.path.basename)
def test_every_flag_in_execstart_exists(unit):
    argv = exec_start(open(unit).read())
    assert argv[0] == "/usr/local/bin/forgebox"
    verb = argv[1]
    flags = [a.split("=")[0] for a in argv[2:] if a.startswith("--")]
    assert flags, argv
    r = subprocess.run([FORGEBOX, verb, "--help"], capture_output=True, text=True, timeout=30)
    usage = r.stdout + r.stderr
    assert r.returncode == 0 and "unknown command" not in usage, usage
    for flag in flags:
        assert re.search(re.escape(flag) + r"\b", usage), f"{verb} does not know {flag}:\n{usage}"


def test_the_fleet_gateway_unit_takes_every_privilege_away():
    text = open(os.path.join(ROOT, "deploy", "systemd", "forgebox-gateway.service")).read()
    for line in ["User=forgebox", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                 "ProtectSystem=strict", "PrivateDevices=yes", "RestrictNamespaces=yes",
                 "ProtectControlGroups=yes", "SystemCallFilter=@system-service"]:
        assert line in text, line
    assert "/etc/forgebox/gateway.yaml" in text


def test_a_remote_mode_gateway_runs_without_any_privilege():
    """forgebox-gateway.service runs `forgebox serve` in remote mode as an
    unprivileged user: it must start, serve, and refuse a create for want
    of nodes - not for want of root."""
    import http.client
    import json
    import pwd
    import time

    from node_fixtures import CA, fbx, free_port

    import pathlib
    import tempfile

    # Not under pytest's tmp_path: its parents are root's alone.
    base = pathlib.Path(tempfile.mkdtemp(prefix="fbx-unpriv-"))
    os.chmod(base, 0o755)
    ca = CA(base)
    crt, key, _ = ca.issue("gateway", "gw-unpriv")
    state = base / "state"
    r = fbx("admin", "init", "--state-dir", state, env={"FORGEBOX_ADMIN_PASSWORD": "unpriv password 1234"})
    assert r.returncode == 0, r.stderr
    admin_key = r.stdout.strip().splitlines()[-1]
    nobody = pwd.getpwnam("nobody")
    # The unit's User= owns the state directory and reads its certificate.
    for root, dirs, files in os.walk(base):
        for n in dirs + files:
            os.chown(os.path.join(root, n), nobody.pw_uid, nobody.pw_gid)
    os.chown(base, nobody.pw_uid, nobody.pw_gid)
    os.chmod(ca.dir, 0o755)
    port = free_port()
    log = open(base / "serve.log", "w")
    proc = subprocess.Popen(
        ["runuser", "-u", "nobody", "--", "env", "-i", "PATH=/usr/bin:/bin", FORGEBOX, "serve",
         "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
         "--set", "nodes.mode=remote", "--set", f"nodes.tls_cert={crt}", "--set", f"nodes.tls_key={key}",
         "--set", f"nodes.tls_ca={ca.crt}", "--set", f"run_dir={base}/run"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/healthz")
                assert c.getresponse().status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, open(base / "serve.log").read()
                time.sleep(0.1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/v1/sandboxes", body=json.dumps({"backend": "jail"}),
                  headers={"Authorization": "Bearer " + admin_key, "Content-Type": "application/json"})
        resp = c.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 503, body
        assert body["error"]["code"] == "unavailable", body
        assert body["error"]["message"] == "no node can take a jail sandbox now (0 up)", body
        child = subprocess.run(["pgrep", "-u", "nobody", "-f", f"serve --state-dir {state}"],
                               capture_output=True, text=True)
        pids = child.stdout.split()
        assert len(pids) == 1, "the gateway is not running as nobody"
        # SIGTERM to the gateway itself (runuser would answer it by dying of it).
        os.kill(int(pids[0]), signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, open(base / "serve.log").read()[-3000:]
    shutil.rmtree(base, ignore_errors=True)

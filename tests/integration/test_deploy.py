"""The systemd units in deploy/systemd are part of what we ship: systemd
itself must accept them, and every forgebox verb and flag their ExecStart
lines use must exist (a unit that names a flag the binary does not know
starts nothing).  docs/deployment.md describes them."""
import glob
import os
import re
import shutil
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

"""The guest image is checked before every start: a modified artifact is
refused with a clear error, in the backend that uses it, and nothing runs."""
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import EXIT_SANDBOX, FORGEBOX, IMAGE, forgebox


@pytest.fixture
def image_copy(tmp_path):
    """A private copy of the image: small files copied, the rootfs tree
    hard-linked (each test replaces, never edits, a linked file)."""
    dst = tmp_path / "image"
    dst.mkdir()
    for f in ("vmlinuz", "initrd.img", "manifest.json", "packages.txt", "kernel-version.txt"):
        shutil.copy2(os.path.join(IMAGE, f), dst / f)
    os.link(os.path.join(IMAGE, "rootfs.ext4"), dst / "rootfs.ext4")
    if os.path.exists(os.path.join(IMAGE, "rootfs.erofs")):
        os.link(os.path.join(IMAGE, "rootfs.erofs"), dst / "rootfs.erofs")
    subprocess.run(["cp", "-al", os.path.join(IMAGE, "rootfs"), str(dst / "rootfs")], check=True)
    return dst


def replace_file(path, data):
    """Breaks the hard link, then writes new content."""
    mode = os.stat(path).st_mode
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode & 0o7777)


def run_in(image, state, backend):
    return forgebox("run", "--backend", backend, "--", "echo", "ran", image=str(image), state=state)


def test_pristine_copy_runs(image_copy, tmp_path):
    r = run_in(image_copy, str(tmp_path / "state"), "jail")
    assert r.rc == 0, r
    assert r.stdout == "ran\n"


def test_modified_rootfs_image_refused_by_jail(image_copy, tmp_path):
    # The jail runs rootfs.ext4 (a loop device of its own), like the VM.
    state = str(tmp_path / "state")
    assert run_in(image_copy, state, "jail").rc == 0          # fills the verification cache
    target = image_copy / "rootfs.ext4"
    data = bytearray(target.read_bytes())
    data[1 << 20] ^= 0xFF
    replace_file(target, bytes(data))
    r = run_in(image_copy, state, "jail")                      # the cache must not hide it
    assert r.rc == EXIT_SANDBOX, r
    assert "guest image file" in r.stderr and "rootfs.ext4 has been modified" in r.stderr
    assert "refusing to start" in r.stderr
    assert r.stdout == ""


needs_erofs = pytest.mark.skipif(not os.path.exists(os.path.join(IMAGE, "rootfs.erofs")),
                                 reason="the image has no rootfs.erofs (no mkfs.erofs where it was built)")


@needs_erofs
def test_modified_erofs_root_refused_by_jail(image_copy, tmp_path):
    # Where the image has one, the jail's root is rootfs.erofs, mounted from
    # its file: checked like rootfs.ext4, and the cache must not hide it.
    state = str(tmp_path / "state")
    assert run_in(image_copy, state, "jail").rc == 0
    target = image_copy / "rootfs.erofs"
    data = bytearray(target.read_bytes())
    data[1 << 20] ^= 0xFF
    replace_file(target, bytes(data))
    r = run_in(image_copy, state, "jail")
    assert r.rc == EXIT_SANDBOX, r
    assert "guest image file" in r.stderr and "rootfs.erofs has been modified" in r.stderr
    assert "refusing to start" in r.stderr
    assert r.stdout == ""


@needs_erofs
def test_missing_erofs_root_refused_by_jail(image_copy, tmp_path):
    # The manifest lists it: a jail does not quietly fall back to ext4.
    os.unlink(image_copy / "rootfs.erofs")
    r = run_in(image_copy, str(tmp_path / "state"), "jail")
    assert r.rc == EXIT_SANDBOX, r
    assert "rootfs.erofs is missing" in r.stderr
    assert r.stdout == ""


def test_unsealed_erofs_root_refused_by_jail(image_copy, tmp_path):
    # A rootfs.erofs the manifest does not list is never mounted: the jail
    # takes the file's presence as "verified", so verification refuses it.
    target = image_copy / "rootfs.erofs"
    if target.exists():
        manifest = json.loads((image_copy / "manifest.json").read_text())
        del manifest["artifacts"]["rootfs.erofs"]
        (image_copy / "manifest.json").write_text(json.dumps(manifest))
    else:
        target.write_bytes(b"\0" * 4096)
    r = run_in(image_copy, str(tmp_path / "state"), "jail")
    assert r.rc == EXIT_SANDBOX, r
    assert "rootfs.erofs is not in the manifest" in r.stderr
    assert r.stdout == ""


def test_added_file_refused(image_copy, tmp_path):
    # rootfs/ (the tree rootfs.ext4 was made from) is checked by `image verify`.
    (image_copy / "rootfs" / "etc" / "evil.conf").write_text("x")
    r = forgebox("image", "verify", "--image", str(image_copy))
    assert r.rc == 1, r
    assert "has been modified" in r.stderr


def test_modified_kernel_refused_by_vm(image_copy, tmp_path):
    data = bytearray((image_copy / "vmlinuz").read_bytes())
    data[-1] ^= 0x01
    (image_copy / "vmlinuz").write_bytes(bytes(data))
    r = run_in(image_copy, str(tmp_path / "state"), "vm")
    assert r.rc == EXIT_SANDBOX, r
    assert "vmlinuz has been modified" in r.stderr
    assert r.stdout == ""


def test_modified_agent_refused(image_copy, tmp_path):
    agent = image_copy / "rootfs" / "usr" / "sbin" / "fb-agent"
    replace_file(agent, agent.read_bytes() + b"\0")
    r = forgebox("image", "verify", "--image", str(image_copy))
    assert r.rc == 1, r
    assert "has been modified" in r.stderr


def test_missing_manifest(image_copy, tmp_path):
    os.unlink(image_copy / "manifest.json")
    r = run_in(image_copy, str(tmp_path / "state"), "jail")
    assert r.rc == EXIT_SANDBOX, r
    assert "manifest.json missing" in r.stderr and "make image" in r.stderr


def test_image_verify_command(image_copy):
    r = forgebox("image", "verify", "--image", str(image_copy))
    assert r.rc == 0, r
    assert "every artifact matches its manifest" in r.stdout
    (image_copy / "rootfs" / "etc" / "extra").write_text("x")
    r = forgebox("image", "verify", "--image", str(image_copy))
    assert r.rc == 1
    assert "has been modified" in r.stderr


def test_doctor_reports_backends():
    r = forgebox("doctor")
    assert r.rc == 0, r
    assert "backend vm:  ready" in r.stdout
    assert "backend jail: ready" in r.stdout
    assert "verified" in r.stdout
    # What the jail needs of the host kernel is checked, not assumed.
    assert "time: ok" in r.stdout
    assert re.search(r"jail kernel: Landlock ABI [1-9][0-9]*, loop devices: ok", r.stdout), r
    kvm_line = [l for l in r.stdout.splitlines() if "accelerator:" in l][0]
    if "TCG" in kvm_line:
        assert "not treated as a security boundary" in r.stdout


def test_doctor_fails_without_image(tmp_path):
    r = forgebox("doctor", image=str(tmp_path / "none"))
    assert r.rc == 1
    assert "backend vm:  cannot run" in r.stdout
    assert "backend jail: cannot run" in r.stdout


def test_image_trusts_the_public_ca_bundle():
    """HTTPS through an egress grant (pip, git, web_fetch) verifies servers
    against Debian's CA bundle, pinned in guest/image.conf; without it every
    TLS connection a grant allows would fail certificate checks."""
    r = forgebox("run", "--backend", "jail", "--", "python3", "-c",
                 "import ssl; c = ssl.create_default_context(); "
                 "print(c.cert_store_stats()['x509_ca'] > 100)")
    assert (r.rc, r.stdout) == (0, "True\n"), r

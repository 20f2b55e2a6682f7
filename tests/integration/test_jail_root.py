"""The jails' shared root (src/sandbox/jailroot.c): one read-only EROFS
mount per verified image file under RUN_DIR/jail-root, each jail on an
overlay of its own over it.  A changed or replaced image is never served
from an older shared mount; nothing of the shared mount is writable or
visible from inside a jail beyond its root; one jail cannot change what
another sees through it (that no jail sees another's or the host's file
activity through inotify is test_isolation_review.py's
test_inotify_sees_no_host_or_other_sandbox_activity, which runs on it)."""
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from conftest import EXIT_SANDBOX, IMAGE, RUN_DIR, forgebox

pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(IMAGE, "rootfs.erofs")),
                                reason="the image has no rootfs.erofs")

SHARED = os.path.join(RUN_DIR, "jail-root")


@pytest.fixture
def image_copy(tmp_path):
    dst = tmp_path / "image"
    dst.mkdir()
    for f in ("vmlinuz", "initrd.img", "manifest.json", "packages.txt", "kernel-version.txt"):
        shutil.copy2(os.path.join(IMAGE, f), dst / f)
    os.link(os.path.join(IMAGE, "rootfs.ext4"), dst / "rootfs.ext4")
    shutil.copy2(os.path.join(IMAGE, "rootfs.erofs"), dst / "rootfs.erofs")
    subprocess.run(["cp", "-al", os.path.join(IMAGE, "rootfs"), str(dst / "rootfs")], check=True)
    return dst


def shared_mounts(image):
    """The shared EROFS mounts of image (a directory) under SHARED, from
    the host's mountinfo: named <sha256(image's real path)[:16]>-<file
    identity>."""
    prefix = hashlib.sha256(os.path.realpath(image).encode()).hexdigest()[:16] + "-"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            point, fstype = fields[4], fields[fields.index("-") + 1]
            if os.path.dirname(point) == SHARED and os.path.basename(point).startswith(prefix):
                out.append((os.path.basename(point), fstype, fields[5]))
    return out


def jail(image, state, *cmd):
    return forgebox("run", "--backend", "jail", "--", *cmd, image=str(image), state=state)


def test_shared_mount_is_read_only_and_root_only(image_copy, tmp_path):
    r = jail(image_copy, str(tmp_path / "state"), "true")
    assert r.rc == 0, r
    mounts = shared_mounts(image_copy)
    assert len(mounts) == 1, mounts
    name, fstype, opts = mounts[0]
    assert fstype == "erofs"
    assert {"ro", "nosuid", "nodev"} <= set(opts.split(",")), opts
    st = os.stat(SHARED)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o700)


def test_changed_image_file_gets_a_new_shared_mount(image_copy, tmp_path):
    state = str(tmp_path / "state")
    assert jail(image_copy, state, "true").rc == 0
    (before,) = [m[0] for m in shared_mounts(image_copy)]
    target = image_copy / "rootfs.erofs"
    good = target.read_bytes()
    # Tampered in place (the same inode the shared mount reads): refused.
    data = bytearray(good)
    data[1 << 20] ^= 0xFF
    with open(target, "r+b") as f:
        f.write(data)
    r = jail(image_copy, state, "true")
    assert r.rc == EXIT_SANDBOX and "rootfs.erofs has been modified" in r.stderr, r
    # The same bytes again: verified, but a file changed since the shared
    # mount was made is not served from it; the old one is detached.
    with open(target, "r+b") as f:
        f.write(good)
    r = jail(image_copy, state, "cat", "/etc/hostname")
    assert r.rc == 0, r
    after = [m[0] for m in shared_mounts(image_copy)]
    assert len(after) == 1 and after[0] != before, (before, after)
    assert not os.path.exists(os.path.join(SHARED, before))


def test_replaced_image_is_served_from_its_own_mount(image_copy, tmp_path):
    # Another sealed rootfs.erofs (the same tree plus a marker file) in
    # place of the first, while the first one's shared mount exists: the
    # jail sees the new one.
    state = str(tmp_path / "state")
    r = jail(image_copy, state, "sh", "-c", "cat /etc/fbx-marker || echo none")
    assert (r.rc, r.stdout) == (0, "none\n"), r
    tree = tmp_path / "tree"
    subprocess.run(["cp", "-al", os.path.join(IMAGE, "rootfs"), str(tree)],
                   check=True)
    (tree / "etc" / "fbx-marker").write_text("replaced\n")
    new = tmp_path / "new.erofs"
    subprocess.run(["mkfs.erofs", "--quiet", str(new), str(tree)], check=True)
    manifest = json.loads((image_copy / "manifest.json").read_text())
    manifest["artifacts"]["rootfs.erofs"]["sha256"] = hashlib.sha256(new.read_bytes()).hexdigest()
    (image_copy / "manifest.json").write_text(json.dumps(manifest))
    os.replace(new, image_copy / "rootfs.erofs")
    r = jail(image_copy, state, "cat", "/etc/fbx-marker")
    assert (r.rc, r.stdout) == (0, "replaced\n"), r
    assert len(shared_mounts(image_copy)) == 1


WRITER = r'''
import errno, os, sys
out = []
def attempt(name, fn):
    try:
        fn()
        out.append(name + ":OK")
    except OSError as e:
        out.append(name + ":" + errno.errorcode[e.errno])
attempt("create", lambda: open("/etc/fbx-written", "w"))
attempt("write", lambda: open("/etc/hostname", "a"))
attempt("mkdir", lambda: os.mkdir("/fbx-dir"))
attempt("chmod", lambda: os.chmod("/bin/sh", 0o777))
attempt("utime", lambda: os.utime("/etc/passwd", (0, 0)))
attempt("xattr", lambda: os.setxattr("/etc/passwd", "user.fbx", b"1"))
mounts = open("/proc/self/mountinfo").read()
root = [l for l in mounts.splitlines() if l.split()[4] == "/"]
print(" ".join(out))
print(root[0].split(" - ")[1])
print("jail-root" in mounts, os.path.exists(sys.argv[1]))
'''


def test_a_jail_cannot_write_or_see_the_shared_mount(image_copy, tmp_path):
    state = str(tmp_path / "state")
    r = jail(image_copy, state, "python3", "-c", WRITER, SHARED)
    assert r.rc == 0, r
    attempts, root, seen = r.stdout.splitlines()
    for a in attempts.split():
        assert a.split(":")[1] in ("EROFS", "EPERM", "EACCES", "ENOTSUP"), attempts
    # Its root: an overlay of its own whose layers show no host path.
    assert root.startswith("overlay none ro,lowerdir+=/,datadir+=/"), root
    assert seen == "False False", seen
    # Nor remount or unmount its root, and the next jail sees the image as
    # sealed.
    r = jail(image_copy, state, "sh", "-c",
             "mount -o remount,rw / 2>/dev/null && echo REMOUNTED; "
             "umount -l / 2>/dev/null && echo UNMOUNTED; (: > /etc/x) 2>/dev/null && echo WROTE; true")
    assert (r.rc, r.stdout) == (0, ""), r
    want = hashlib.sha256(open(os.path.join(IMAGE, "rootfs", "etc", "passwd"), "rb").read()).hexdigest()
    r = jail(image_copy, state, "sha256sum", "/etc/passwd")
    assert r.rc == 0 and r.stdout.split()[0] == want, r
    r = jail(image_copy, state, "ls", "/etc/fbx-written", "/fbx-dir")
    assert r.rc != 0, r


def test_two_images_keep_their_own_shared_mounts(image_copy, tmp_path):
    # Jails of two image directories alternate without replacing each
    # other's shared mount.
    other = tmp_path / "other"
    shutil.copytree(image_copy, other, symlinks=True, copy_function=os.link)
    os.unlink(other / "rootfs.erofs")
    shutil.copy2(image_copy / "rootfs.erofs", other / "rootfs.erofs")
    state = str(tmp_path / "state")
    assert jail(image_copy, state, "true").rc == 0
    first = shared_mounts(image_copy)
    assert jail(other, state, "true").rc == 0
    assert jail(image_copy, state, "true").rc == 0
    assert shared_mounts(image_copy) == first and len(first) == 1
    assert len(shared_mounts(other)) == 1


def test_without_a_shared_root_the_jail_mounts_its_own(image_copy, tmp_path):
    # A run dir that cannot hold the shared mount (jail-root is a file):
    # the jail still starts, on an EROFS superblock of its own.
    # (Beside RUN_DIR: the jail resolves its root under the run dir as an
    # unprivileged uid, so no 0700 directory may be on the way.)
    run_dir = RUN_DIR + "-noshared"
    os.makedirs(run_dir, mode=0o755)
    try:
        open(os.path.join(run_dir, "jail-root"), "w").close()
        r = forgebox("run", "--backend", "jail", "--", "sh", "-c", "head -1 /proc/self/mountinfo",
                     image=str(image_copy), state=str(tmp_path / "state"),
                     env={"FORGEBOX_RUN_DIR": run_dir})
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    assert r.rc == 0, r
    assert " - erofs " in r.stdout, r

"""`forgebox run`: the functional contract, in both backends.

Output, exit status, signals, stdin, environment, working directory, files
in and out, and the CLI's handling of bad input.
"""
import os
import signal
import stat
import subprocess
import time

import pytest

from conftest import (EXIT_NOEXEC, EXIT_NOTFOUND, EXIT_SANDBOX, EXIT_TIMEOUT, EXIT_USAGE,
                      FORGEBOX, IMAGE, forgebox)


def test_hello_world(run, backend):
    r = run(backend, "--", "echo", "hello", "world")
    assert r.rc == 0, r
    assert r.stdout == "hello world\n"
    assert r.stderr == ""


def test_python_program(run, backend):
    code = "import sys, json\nprint(json.dumps({'sum': sum(range(101)), 'v': sys.version_info[0]}))"
    r = run(backend, "--", "python3", "-c", code)
    assert r.rc == 0, r
    assert r.stdout == '{"sum": 5050, "v": 3}\n'


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_codes(run, code):
    r = run("jail", "--", "sh", "-c", f"exit {code}")
    assert r.rc == code, r


def test_exit_code_vm(run):
    r = run("vm", "--", "sh", "-c", "echo out; echo err >&2; exit 42")
    assert r.rc == 42, r
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"


def test_stdout_and_stderr_are_separate(run, backend):
    r = run(backend, "--", "sh", "-c", "echo to-out; echo to-err >&2")
    assert r.stdout == "to-out\n"
    assert r.stderr == "to-err\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_killed_by_signal_exits_128_plus_n(run, backend, sig):
    r = run(backend, "--", "sh", "-c", f"kill -{int(sig)} $$")
    assert r.rc == 128 + int(sig), r


def test_stdin_is_forwarded(run, backend):
    data = b"line one\nline two\n" * 1000
    r = run(backend, "--", "sh", "-c", "wc -l; echo done", input=data)
    assert r.rc == 0, r
    assert r.stdout == "2000\ndone\n"


def test_large_stdin_round_trips(run):
    data = os.urandom(3 * 1024 * 1024)
    r = run("jail", "--", "sha256sum", input=data)
    import hashlib
    assert r.rc == 0, r
    assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest()


def test_environment_starts_empty_plus_defaults(run, backend):
    os.environ["FBX_HOST_ONLY"] = "leak"
    try:
        r = run(backend, "--env", "GREETING=hi there", "--env", "EMPTY=", "--", "env")
    finally:
        del os.environ["FBX_HOST_ONLY"]
    assert r.rc == 0, r
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["GREETING"] == "hi there"
    assert env["EMPTY"] == ""
    assert env["HOME"] == "/workspace"
    assert env["USER"] == "forgebox"
    assert "FBX_HOST_ONLY" not in env
    assert set(env) == {"GREETING", "EMPTY", "PATH", "HOME", "USER", "LOGNAME", "LANG", "SHELL", "PWD"} - {"PWD"} | ({"PWD"} & set(env))


def test_env_can_override_path(run):
    r = run("jail", "--env", "PATH=/nowhere", "--", "/bin/sh", "-c", 'echo "$PATH"')
    assert r.stdout == "/nowhere\n"


def test_cwd(run, backend):
    r = run(backend, "--", "pwd")
    assert r.stdout == "/workspace\n"
    r = run(backend, "--cwd", "/tmp", "--", "pwd")
    assert r.rc == 0, r
    assert r.stdout == "/tmp\n"


def test_cwd_that_does_not_exist(run):
    r = run("jail", "--cwd", "/nonexistent", "--", "pwd")
    assert r.rc == EXIT_SANDBOX, r
    assert "cannot change directory to /nonexistent: No such file or directory" in r.stderr


def test_files_in_and_out(run, backend, tmp_path):
    src = tmp_path / "input.txt"
    src.write_bytes(b"alpha\nbeta\n")
    script = tmp_path / "tool.py"
    script.write_text("import sys\nprint(open('/workspace/input.txt').read().upper(), end='')\n"
                      "open('/workspace/out/result.txt','w').write('done:' + sys.argv[1])\n")
    dst = tmp_path / "result.txt"
    r = run(backend, "--put", f"{src}:/workspace/input.txt", "--put", f"{script}:/workspace/tool.py",
            "--get", f"/workspace/out/result.txt:{dst}", "--",
            "sh", "-c", "mkdir -p /workspace/out && python3 /workspace/tool.py ok")
    assert r.rc == 0, r
    assert r.stdout == "ALPHA\nBETA\n"
    assert dst.read_text() == "done:ok"


def test_binary_file_round_trip(run, tmp_path):
    data = os.urandom(2 * 1024 * 1024 + 17)   # several protocol chunks
    src = tmp_path / "blob"
    src.write_bytes(data)
    dst = tmp_path / "blob.out"
    r = run("jail", "--put", f"{src}:/tmp/blob", "--get", f"/tmp/blob:{dst}", "--", "true")
    assert r.rc == 0, r
    assert dst.read_bytes() == data


def test_executable_bit_follows_local_file(run, tmp_path):
    s = tmp_path / "hello.sh"
    s.write_text("#!/bin/sh\necho from-script\n")
    s.chmod(0o755)
    r = run("jail", "--put", f"{s}:/workspace/hello.sh", "--", "/workspace/hello.sh")
    assert r.rc == 0, r
    assert r.stdout == "from-script\n"


def test_get_of_missing_file_fails_clearly(run, tmp_path):
    dst = tmp_path / "nope"
    r = run("jail", "--get", f"/workspace/nope:{dst}", "--", "true")
    assert r.rc == EXIT_SANDBOX, r
    assert "cannot get /workspace/nope" in r.stderr
    assert "No such file or directory" in r.stderr
    assert not dst.exists()


@pytest.mark.parametrize("remote", ["/etc/passwd", "/workspace/../etc/passwd", "../../etc/shadow",
                                    "/proc/self/environ"])
def test_file_api_is_confined_to_scratch(run, tmp_path, remote):
    dst = tmp_path / "stolen"
    r = run("jail", "--get", f"{remote}:{dst}", "--", "true")
    assert r.rc == EXIT_SANDBOX, r
    assert ("outside /workspace and /tmp" in r.stderr) or ("contains '..'" in r.stderr), r
    assert not dst.exists()


def test_file_api_does_not_follow_symlinks(run, tmp_path):
    dst = tmp_path / "stolen"
    # The command plants a symlink; the host's get must refuse to follow it.
    r = run("jail", "--get", f"/workspace/link:{dst}", "--", "ln", "-s", "/etc/passwd", "/workspace/link")
    assert r.rc == EXIT_SANDBOX, r
    assert "path goes through a symlink" in r.stderr
    assert not dst.exists()


def test_put_cannot_overwrite_through_symlink(run, tmp_path):
    src = tmp_path / "payload"
    src.write_text("x")
    r = run("jail", "--put", f"{src}:/workspace/dir/file", "--", "true")
    assert r.rc == EXIT_SANDBOX, r
    assert "cannot put /workspace/dir/file" in r.stderr


def test_command_not_found(run, backend):
    r = run(backend, "--", "no-such-command-xyz")
    assert r.rc == EXIT_NOTFOUND, r
    assert r.stderr == "forgebox: no-such-command-xyz: command not found\n"


def test_command_not_executable(run):
    r = run("jail", "--", "/etc/passwd")
    assert r.rc == EXIT_NOEXEC, r
    assert "Permission denied" in r.stderr


def test_output_is_streamed_live(state_dir):
    """The first line arrives while the command is still running."""
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir)
    p = subprocess.Popen([FORGEBOX, "run", "--backend", "jail", "--", "sh", "-c",
                          "echo first; sleep 3; echo second"],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    t0 = time.monotonic()
    first = p.stdout.readline()
    t_first = time.monotonic() - t0
    rest = p.stdout.read()
    p.wait(timeout=30)
    t_all = time.monotonic() - t0
    assert first == b"first\n"
    assert rest == b"second\n"
    # Ordering, not a speed threshold: the first line came before the sleep ended.
    assert t_first < t_all - 2.0


def test_interrupt_ends_the_sandbox(state_dir):
    env = dict(os.environ, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STATE_DIR=state_dir)
    p = subprocess.Popen([FORGEBOX, "run", "--backend", "jail", "--", "sh", "-c",
                          "echo started; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=env)
    assert p.stdout.readline() == b"started\n"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGINT
    assert b"forgebox: interrupted" in err


# ---- bad input to the CLI --------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--backend", "docker", "--", "true"], "--backend must be vm or jail"),
    (["--memory", "lots", "--", "true"], "--memory must be a number of MiB"),
    (["--memory", "1", "--", "true"], "--memory must be a number of MiB"),
    (["--memory", "99999999999999999999999", "--", "true"], "--memory must be a number of MiB"),
    (["--vcpus", "0", "--", "true"], "--vcpus must be between 1 and 64"),
    (["--timeout", "-5", "--", "true"], "--timeout must be between 1 and 86400"),
    (["--timeout", "0", "--", "true"], "--timeout must be between 1 and 86400"),
    (["--disk", "1e9", "--", "true"], "--disk must be a number of MiB"),
    (["--env", "NOEQUALS", "--", "true"], "--env takes KEY=VALUE"),
    (["--env", "=value", "--", "true"], "--env takes KEY=VALUE"),
    (["--cwd", "relative", "--", "true"], "--cwd must be an absolute path"),
    (["--put", "nocolon", "--", "true"], "--put takes LOCAL:REMOTE"),
    (["--get", "/x:", "--", "true"], "--get takes REMOTE:LOCAL"),
    (["--bogus", "--", "true"], "unknown or incomplete option '--bogus'"),
    (["--memory"], "unknown or incomplete option '--memory'"),
    ([], "no command given"),
    (["--"], "no command given"),
])
def test_bad_flags_get_a_usage_message(args, message):
    r = forgebox("run", *args)
    assert r.rc == EXIT_USAGE, r
    assert message in r.stderr
    assert "Try 'forgebox run --help'." in r.stderr


def test_put_of_missing_local_file(tmp_path):
    r = forgebox("run", "--put", f"{tmp_path}/absent:/workspace/x", "--", "true")
    assert r.rc == EXIT_USAGE, r
    assert f"cannot open {tmp_path}/absent: No such file or directory" in r.stderr


def test_help_and_unknown_command():
    r = forgebox("run", "--help")
    assert r.rc == 0 and "usage: forgebox run" in r.stdout
    r = forgebox("frobnicate")
    assert r.rc == EXIT_USAGE and "unknown command 'frobnicate'" in r.stderr


def test_vm_memory_below_vm_minimum(run):
    r = run("vm", "--memory", "64", "--", "true")
    assert r.rc == EXIT_SANDBOX, r
    assert "memory must be between 128 and 65536 MiB" in r.stderr


def test_invalid_utf8_argument_is_refused(run):
    r = forgebox("run", "--backend", "jail", "--", "echo", b"\xff\xfe".decode("latin-1"))
    # Python passes the latin-1 text as UTF-8 bytes; send real invalid bytes instead:
    r = subprocess.run([FORGEBOX.encode(), b"run", b"--backend", b"jail", b"--", b"echo", b"\xff\xfe"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, FORGEBOX_IMAGE=IMAGE))
    assert r.returncode == EXIT_SANDBOX
    assert b"a command argument is not valid UTF-8" in r.stderr


def test_failed_get_keeps_the_existing_local_file(run, tmp_path):
    # Finding 4: the sandbox decides whether a --get fails; a failure must
    # never cost the operator the file that was there.
    dst = tmp_path / "precious.txt"
    dst.write_bytes(b"keep me\n")
    dst.chmod(0o640)
    r = run("jail", "--get", f"/workspace/missing:{dst}", "--", "true")
    assert r.rc == EXIT_SANDBOX, r
    assert "cannot get /workspace/missing" in r.stderr
    assert dst.read_bytes() == b"keep me\n"
    # A directory, not a file (the agent refuses it): still intact.
    r = run("jail", "--get", f"/workspace/d:{dst}", "--", "mkdir", "/workspace/d")
    assert r.rc == EXIT_SANDBOX, r
    assert "not a regular file (wrong_type)" in r.stderr
    assert dst.read_bytes() == b"keep me\n"
    # A failed copy leaves no temporary file behind either.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]
    # A successful one replaces the file, keeping its mode.
    r = run("jail", "--get", f"/workspace/new:{dst}", "--", "sh", "-c", "echo fresh > /workspace/new")
    assert r.rc == 0, r
    assert dst.read_bytes() == b"fresh\n"
    assert stat.S_IMODE(dst.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"]

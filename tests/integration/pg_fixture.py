"""A real PostgreSQL for the tests of the PostgreSQL store engine.

PgServer runs Debian's PostgreSQL binaries (/usr/lib/postgresql/NN/bin)
in a temporary directory: initdb as the unprivileged `postgres` user (or
the current user when not root), listening on 127.0.0.1 and a free port
only, its unix socket inside the same directory.  It creates one role with
a password and one database owned by it; `url` is the
postgresql://user:password@127.0.0.1:PORT/db URL ForgeBox takes.  stop()
and restart() drive pg_ctl; close() stops and removes everything.

Run it alone to get a server for manual tests:
    python3 tests/integration/pg_fixture.py   (prints the URL; SIGINT or SIGTERM stops)
"""
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time


def pg_bindir():
    """The newest installed PostgreSQL's bin directory, or None."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(dirs[-1]) if dirs else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, db="forgebox", user="fbx"):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.tmp = tempfile.mkdtemp(prefix="fbx-pg-")
        os.chmod(self.tmp, 0o755)
        self.data = os.path.join(self.tmp, "data")
        self.sock = os.path.join(self.tmp, "sock")
        os.mkdir(self.sock)
        self.port = free_port()
        self.db, self.user = db, user
        self.password = secrets.token_hex(16)
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = os.path.join(self.tmp, "pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run("initdb", "-D", self.data, "-A", "scram-sha-256", "--username=postgres",
                  f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync")
        os.unlink(pwfile)
        self.start()
        self.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{self.password}'", db="postgres", user="postgres")
        self.psql(f"CREATE DATABASE {db} OWNER {user}", db="postgres", user="postgres")

    @property
    def url(self):
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.db}"

    def _run(self, tool, *args, input=None, check=True):
        p = subprocess.run(self.as_user + [os.path.join(self.bindir, tool), *args], input=input,
                           capture_output=True, text=True, timeout=120, cwd=self.tmp)
        if check and p.returncode != 0:
            raise RuntimeError(f"{tool} failed ({p.returncode}): {p.stderr.strip()} {p.stdout.strip()}")
        return p

    def start(self):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.sock} "
                "-c fsync=off -c max_connections=50")
        self._run("pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.tmp, "log"), "-w", "start")

    def stop(self):
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def restart(self, down_seconds=0.0):
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def psql(self, sql, db=None, user=None):
        """Runs SQL over the unix socket and returns its unaligned output."""
        env = dict(os.environ, PGPASSWORD=self.password)
        p = subprocess.run(self.as_user + [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                                            "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", str(self.port),
                                            "-U", user or self.user, "-d", db or self.db, "-c", sql],
                           capture_output=True, text=True, env=env, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"psql failed: {p.stderr}")
        return p.stdout.strip()

    def fresh_database(self, name):
        """Creates another empty database owned by the role; its URL."""
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}", db="postgres", user="postgres")
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}"

    def close(self):
        try:
            self.stop()
        except Exception:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)


if __name__ == "__main__":
    import signal
    import sys
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    srv = PgServer()
    print(srv.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        srv.close()

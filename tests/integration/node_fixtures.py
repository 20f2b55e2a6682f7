"""Real `forgebox node` processes and the certificates they need, for the
node tests (test_node.py) and the end-to-end tests of several hosts.

    ca = CA(tmpdir)                                  # forgebox ca init
    crt, key = ca.issue("gateway", "gw-1")           # forgebox ca issue
    store = SqliteStore(tmpdir / "state")            # forgebox admin init (a SQLite store)
    node = Node(ca, "node-1", store.state, store_url=store.url).start()
    node.client(ca.issue("gateway", "gw-1")).get("/node/v1/healthz")

A Node runs on a free loopback port with a node certificate issued for
127.0.0.1 under its name; NodeClient speaks HTTPS (TLS 1.3) with a client
certificate through Python's ssl module, as a gateway would.  The node's
state directory must hold the audit key of the store's chain
(docs/node.md): with a SQLite store it is the store's own state directory;
with PostgreSQL pass a fresh directory and copy_secrets_from= the
gateway's state directory.
"""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import tempfile
import time

from conftest import FORGEBOX, IMAGE, RUN_DIR


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def fbx(*args, env=None, timeout=60):
    full = dict(os.environ, FORGEBOX_RUN_DIR=RUN_DIR, FORGEBOX_IMAGE=IMAGE)
    full.update(env or {})
    return subprocess.run([FORGEBOX, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full)


class CA:
    """An organisation CA in dir (forgebox ca init)."""

    def __init__(self, base, org="acme"):
        self.base = str(base)
        self.dir = os.path.join(self.base, "ca")
        p = fbx("ca", "init", "--dir", self.dir, "--org", org)
        assert p.returncode == 0, p.stderr
        self.crt = os.path.join(self.dir, "ca.crt")
        self.crl = os.path.join(self.dir, "crl.pem")
        self._n = 0

    def issue(self, role, name, *extra):
        """Returns (crt, key) paths and the serial as .serial of the tuple's owner: (crt, key, serial)."""
        self._n += 1
        out = os.path.join(self.base, f"{role}-{name}-{self._n}")
        p = fbx("ca", "issue", "--dir", self.dir, "--role", role, "--name", name, "--out", out, *extra)
        assert p.returncode == 0, p.stderr
        serial = p.stdout.split(" serial ", 1)[1].split(":", 1)[0]
        return out + ".crt", out + ".key", serial

    def revoke(self, serial):
        p = fbx("ca", "revoke", "--dir", self.dir, "--serial", serial)
        assert p.returncode == 0, p.stderr


class SqliteStore:
    """A store initialised with `forgebox admin init` in state (SQLite)."""

    def __init__(self, state):
        self.state = str(state)
        p = fbx("admin", "init", "--state-dir", self.state, env={"FORGEBOX_FIRST_PASSWORD": "correct horse battery"})
        assert p.returncode == 0, p.stderr
        self.url = "sqlite://" + os.path.join(os.path.realpath(self.state), "forgebox.db")
        self.team = self.query("SELECT id FROM teams ORDER BY created_at LIMIT 1")[0][0]

    def db(self):
        c = sqlite3.connect(os.path.join(self.state, "forgebox.db"), timeout=30, isolation_level=None)
        return c

    def query(self, sql, *args):
        c = self.db()
        try:
            return c.execute(sql, args).fetchall()
        finally:
            c.close()

    def execute(self, sql, *args):
        c = self.db()
        try:
            c.execute("BEGIN IMMEDIATE")
            cur = c.execute(sql, args)
            c.execute("COMMIT")
            return cur.rowcount
        finally:
            c.close()

    def reserve(self, sid, node_id, backend="jail", memory_mib=256, vcpus=1, team=None):
        """What a gateway's fb_store_sandbox_reserve writes: a 'creating' record owned by node_id."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        self.execute("INSERT INTO sandboxes (id, team_id, key_id, backend, memory_mib, vcpus, state, created_at, "
                     "expires_at, destroyed_at, node_id) VALUES (?, ?, NULL, ?, ?, ?, 'creating', ?, ?, NULL, ?)",
                     sid, team or self.team, backend, memory_mib, vcpus, now, now, node_id)

    def sandbox_state(self, sid):
        rows = self.query("SELECT state FROM sandboxes WHERE id = ?", sid)
        return rows[0][0] if rows else None

    def node(self, name):
        c = self.db()
        c.row_factory = sqlite3.Row
        try:
            r = c.execute("SELECT * FROM nodes WHERE name = ?", (name,)).fetchone()
            return dict(r) if r else None
        finally:
            c.close()

    def declare_down(self, node_id):
        """What a gateway's fb_store_nodes_expire does to a silent node, in one transaction."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        c = self.db()
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("UPDATE nodes SET state = 'down' WHERE id = ? AND state = 'up'", (node_id,))
            c.execute("UPDATE sandboxes SET state = 'lost', destroyed_at = ? WHERE node_id = ? "
                      "AND state IN ('creating', 'running')", (now, node_id))
            c.execute("COMMIT")
        finally:
            c.close()

    def audit(self, event=None, action=None):
        sql, args = "SELECT event, actor, resource, action, outcome, reason FROM audit", []
        conds = []
        if event:
            conds.append("event = ?")
            args.append(event)
        if action:
            conds.append("action = ?")
            args.append(action)
        if conds:
            sql += " WHERE " + " AND ".join(conds)
        return self.query(sql + " ORDER BY seq", *args)


class PgStore(SqliteStore):
    """A PostgreSQL store (pg_fixture.PgServer) initialised with `forgebox
    admin init --store URL` from a gateway state directory (gw_state: it
    keeps the audit key and pepper a node must be given a copy of)."""

    def __init__(self, pg, gw_state, url=None):
        self.pg = pg
        self.url = url or pg.url
        self.dbname = self.url.rsplit("/", 1)[1]
        self.state = str(gw_state)
        p = fbx("admin", "init", "--state-dir", self.state, "--store", self.url,
                env={"FORGEBOX_FIRST_PASSWORD": "correct horse battery"})
        assert p.returncode == 0, p.stderr
        self.team = self.query("SELECT id FROM teams ORDER BY created_at LIMIT 1")[0][0]
        self.start_gateway_once()

    def start_gateway_once(self):
        """A gateway's first start writes the first audit entry and so
        creates the audit key in its state directory: the secret nodes get
        a copy of."""
        env = dict(os.environ, FORGEBOX_RUN_DIR=RUN_DIR, FORGEBOX_IMAGE=IMAGE, FORGEBOX_STORE_URL=self.url)
        gw = subprocess.Popen([FORGEBOX, "serve", "--listen", f"127.0.0.1:{free_port()}", "--state-dir", self.state,
                               "--backend", "jail"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(os.path.join(self.state, "audit.key")) and time.monotonic() < deadline:
                assert gw.poll() is None, "forgebox serve exited"
                time.sleep(0.1)
            assert os.path.exists(os.path.join(self.state, "audit.key"))
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(timeout=60)

    @staticmethod
    def _lit(v):
        if v is None:
            return "NULL"
        if isinstance(v, int):
            return str(v)
        assert "'" not in str(v)
        return f"'{v}'"

    def _sql(self, sql, args):
        parts = sql.split("?")
        assert len(parts) == len(args) + 1
        return "".join(p + (self._lit(a) if i < len(args) else "") for i, (p, a) in
                       enumerate(zip(parts, list(args) + [None])))

    def query(self, sql, *args):
        out = self.pg.psql(self._sql(sql, args).replace("ORDER BY seq", "ORDER BY seq"), db=self.dbname)
        return [tuple(line.split("|")) for line in out.splitlines() if line]

    def execute(self, sql, *args):
        self.pg.psql(self._sql(sql, args), db=self.dbname)

    def node(self, name):
        cols = ["id", "name", "address", "backend", "isolation", "capacity", "memory_mib", "state",
                "heartbeat_unix"]
        rows = self.query(f"SELECT {', '.join(cols)} FROM nodes WHERE name = ?", name)
        if not rows:
            return None
        d = dict(zip(cols, rows[0]))
        for k in ("capacity", "memory_mib", "heartbeat_unix"):
            d[k] = int(d[k])
        return d

    def declare_down(self, node_id):
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        self.pg.psql(f"BEGIN; UPDATE nodes SET state = 'down' WHERE id = '{node_id}' AND state = 'up'; "
                     f"UPDATE sandboxes SET state = 'lost', destroyed_at = '{now}' WHERE node_id = '{node_id}' "
                     "AND state IN ('creating', 'running'); COMMIT;", db=self.dbname)


class NodeClient:
    """A gateway's view of a node: HTTPS with a client certificate (cert=(crt, key) or None)."""

    def __init__(self, node, cert=None, tls12=False):
        self.node = node
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(node.ca.crt)
        if cert:
            ctx.load_cert_chain(cert[0], cert[1])
        self.ctx = ctx

    def conn(self, timeout=120):
        return http.client.HTTPSConnection("127.0.0.1", self.node.port, context=self.ctx, timeout=timeout)

    def request(self, method, path, body=None, headers=None, raw=False, timeout=120):
        """(status, parsed JSON or bytes, headers)."""
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            if not raw and r.getheader("Content-Type", "").startswith("application/json"):
                data = json.loads(data)
            return r.status, data, dict(r.getheaders())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def events(self, sid, exec_id, start=0, timeout=120):
        """Every NDJSON line of an exec's events (the stream read to its end)."""
        c = self.conn(timeout)
        try:
            c.request("GET", f"/node/v1/sandboxes/{sid}/execs/{exec_id}/events?from={start}")
            r = c.getresponse()
            if r.status != 200:
                return r.status, json.loads(r.read())
            assert r.getheader("Content-Type") == "application/x-ndjson"
            lines = []
            while True:
                line = r.readline()
                if not line:
                    break
                lines.append(json.loads(line))
            return 200, lines
        finally:
            c.close()

    def exec_stream(self, sid, body, timeout=120):
        """POST .../execs with "stream": true: (status, the answer) where the
        answer is a JSON error, or (response, connection) whose lines the
        caller reads (NodeClient.lines) and whose connection it closes."""
        c = self.conn(timeout)
        c.request("POST", f"/node/v1/sandboxes/{sid}/execs", body=json.dumps(dict(body, stream=True)).encode(),
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        if not r.getheader("Content-Type", "").startswith("application/x-ndjson"):
            try:
                return r.status, json.loads(r.read())
            finally:
                c.close()
        return r.status, (r, c)

    @staticmethod
    def lines(resp, n=None):
        """The next n NDJSON lines of a streamed answer (all, to its end, when n is None)."""
        out = []
        while n is None or len(out) < n:
            line = resp.readline()
            if not line:
                break
            out.append(json.loads(line))
        return out

    def create(self, sid, ttl_s=300, **fields):
        exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + ttl_s))
        body = {"id": sid, "team_id": self.node.store.team, "backend": self.node.backend, "memory_mib": 256,
                "vcpus": 1, "expires_at": exp}
        body.update(fields)
        return self.post("/node/v1/sandboxes", body)


class Node:
    """A `forgebox node` on a loopback port.  store: a SqliteStore (or any
    object with .url and .team); state: the node's state directory (for
    SQLite, the store's own)."""

    def __init__(self, ca, name, store, state=None, backend="jail", capacity=None, settings=(), extra=(),
                 copy_secrets_from=None, crl=True):
        self.ca, self.name, self.store, self.backend = ca, name, store, backend
        self.dir = tempfile.mkdtemp(prefix="fbx-node-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.state = str(state or store.state)
        if copy_secrets_from:
            os.makedirs(self.state, mode=0o700, exist_ok=True)
            for f in ("audit.key",):  # a node checks no API key: it gets no pepper
                src = os.path.join(copy_secrets_from, f)
                if os.path.exists(src):
                    shutil.copy2(src, os.path.join(self.state, f))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.crt, self.key, self.serial = ca.issue("node", name, "--ip", "127.0.0.1")
        self.capacity = capacity
        self.settings = list(settings)
        self.extra = list(extra)
        self.crl = crl
        self.log_path = os.path.join(self.dir, "node.log")
        self.proc = None

    def argv(self):
        a = [FORGEBOX, "node", "--name", self.name, "--listen", self.address, "--state-dir", self.state,
             "--store", self.store.url, "--backend", self.backend, "--tls-cert", self.crt, "--tls-key", self.key,
             "--tls-ca", self.ca.crt]
        if self.crl:
            a += ["--tls-crl", self.ca.crl]
        if self.capacity:
            a += ["--capacity", str(self.capacity)]
        for s in self.settings:
            a += ["--set", s]
        return a + self.extra

    def start(self, wait=True):
        env = dict(os.environ, FORGEBOX_RUN_DIR=RUN_DIR, FORGEBOX_IMAGE=IMAGE)
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)
        if wait:
            self.wait_listening()
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def wait_listening(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"forgebox node exited {self.proc.returncode}: {self.log()[-3000:]}")
            if "forgebox node listening" in self.log():
                return
            if "log_level=warn" in self.settings and self._accepts():
                return   # a quiet node (bench/nodes.py) logs no "listening" line
            time.sleep(0.1)
        raise AssertionError(f"forgebox node did not start: {self.log()[-3000:]}")

    @property
    def id(self):
        with open(os.path.join(self.state, "node.id")) as f:
            return f.read().strip()

    def client(self, cert):
        """cert: (crt, key[, serial]) of a gateway certificate, or None."""
        return NodeClient(self, cert[:2] if cert else None)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

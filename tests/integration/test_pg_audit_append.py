"""The PostgreSQL audit append (src/store/pg_audit.c): a group commit in
one round trip from the chain ends this gateway committed last, guarded by
the server, and in two when those ends moved.  These tests attack the
remembered ends: another writer or a hand edit between two commits must
never be chained onto, and every text reaches the table exactly as it
was hashed (the rows travel as array literals)."""
import json

import pytest

# The module's PostgreSQL and helpers are test_store_postgres.py's.
from test_store_postgres import exported_request_ids, gateway, pg, run, second_gateway, url  # noqa: F401


def audit_rows(pg, url):
    return int(pg.psql("SELECT count(*) FROM audit", db=url.rsplit("/", 1)[1]))


def test_alternating_gateways_each_find_the_ends_moved_and_chain_correctly(url):
    """Each request through one gateway moves the chain the other
    remembers: every commit after the first takes the careful path.  A
    commit chained onto stale ends would collide on seq (an error, not a
    200) or break the chain (verify fails)."""
    g1 = gateway(url)
    g1.start()
    g1.admin().list_sandboxes()          # creates the audit key, copied next
    g2 = second_gateway(g1, url)
    g2.start()
    rids = []
    try:
        c1, c2 = g1.admin(), g2.admin()
        for _ in range(15):
            for c in (c1, c2, c2, c1):
                status, hdr, _ = c.request("GET", "/v1/sandboxes", raw=True)
                assert status == 200
                rids.append({k.lower(): v for k, v in hdr.items()}["x-request-id"])
    finally:
        g1.stop()
        g2.stop()
    r = run("audit", "verify", url=url, state=g1.state)
    assert r.returncode == 0, r.stderr
    seen = exported_request_ids(url, g1.state)
    assert [rid for rid in rids if not {"auth", "permission"} <= seen.get(rid, set())] == []


@pytest.mark.parametrize("tamper,expect", [
    ("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", "does not end where its head says"),
    ("UPDATE audit_head SET mac = repeat('0', 64)", "does not verify"),
    ("INSERT INTO audit SELECT seq + 1, ts, event, actor, resource, action, outcome, reason, source_ip, "
     "request_id, hash, hash FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)", "does not end where its head says"),
])
def test_an_edit_behind_a_running_gateway_is_never_chained_onto(pg, url, tamper, expect):
    """The gateway remembers the ends it wrote; someone edits the table;
    the next request must be refused (nothing acted on unaudited) and
    nothing appended on top of the edit."""
    g = gateway(url)
    g.start()
    try:
        c = g.admin()
        for _ in range(3):
            c.list_sandboxes()
        pg.psql(tamper, db=url.rsplit("/", 1)[1])
        before = audit_rows(pg, url)
        status, _, body = c.request("GET", "/v1/sandboxes", raw=True)
        assert status == 503, (status, body)
        assert audit_rows(pg, url) == before
        assert expect in g.read_log()
    finally:
        g.stop()
    assert run("audit", "verify", url=url, state=g.state).returncode == 1


def test_texts_with_quotes_backslashes_braces_and_commas_are_stored_exactly(url):
    """Array-literal quoting: the stored text must be the hashed text, or
    verification fails; and export shows it unchanged (a file's path is
    the reason of its audit entry)."""
    odd = '/tmp/a"b\\c,{d} NULL \'e\' \u00e9\u4e2d'
    g = gateway(url)
    g.start()
    try:
        c = g.admin()
        s = c.create_sandbox(backend="jail", memory_mib=128)
        for _ in range(2):
            c.put_file(s["id"], odd, b"x")
        assert c.get_file(s["id"], odd) == b"x"
        c.delete_sandbox(s["id"])
    finally:
        g.stop()
    r = run("audit", "verify", url=url, state=g.state)
    assert r.returncode == 0, r.stderr
    r = run("audit", "export", url=url, state=g.state)
    assert r.returncode == 0, r.stderr
    texts = [v for line in r.stdout.splitlines() for v in json.loads(line).values() if isinstance(v, str)]
    assert sum(odd == t for t in texts) >= 3, r.stdout[-3000:]

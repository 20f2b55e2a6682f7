"""The authorization matrix: every route against every kind of credential,
asserting the status and the audit entry each request produced."""
import datetime
import json
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, Gateway

DEVELOPER_SCOPES = ["sandboxes:create", "sandboxes:read", "sandboxes:exec", "keys:manage", "tasks:create",
                    "tasks:read"]


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def env():
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    admin = g.admin()
    ta, tb = admin.create_team("authz-a"), admin.create_team("authz-b")
    ua = admin.create_user(username="authz-dev-a", password=FIRST_PASSWORD, team_id=ta["id"], role="developer")
    ub = admin.create_user(username="authz-dev-b", password=FIRST_PASSWORD, team_id=tb["id"], role="developer")

    def key(user, scopes, expires_at=None):
        return admin.create_key(name="k", scopes=scopes, expires_at=expires_at, user_id=user["id"])

    keys = {
        "allowed": key(ua, DEVELOPER_SCOPES)["key"],
        "narrow": key(ua, ["tasks:read"])["key"],
        "other_team": key(ub, DEVELOPER_SCOPES)["key"],
    }
    revoked = key(ua, DEVELOPER_SCOPES)
    admin.delete_key(revoked["id"])
    keys["revoked"] = revoked["key"]
    soon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
    keys["expired"] = key(ua, DEVELOPER_SCOPES, expires_at=iso(soon))["key"]
    keys["unknown"] = "fbk_0123456789ab_" + "A" * 43
    keys["malformed"] = "not-a-key"
    a = g.client(keys["allowed"])
    sandbox = a.create_sandbox(backend="jail")
    a.put_file(sandbox["id"], "/workspace/f", b"data")
    time.sleep(2.5)   # let the expiring key expire
    yield {"g": g, "keys": keys, "sandbox": sandbox, "admin": admin, "a": a}
    a.delete_sandbox(sandbox["id"])
    assert g.stop() == 0, g.read_log()


def routes(sid):
    """(method, path, body, needs) for every route that takes a key."""
    return [
        ("GET", "/v1/sandboxes", None, "sandboxes:read"),
        ("POST", "/v1/sandboxes", {"backend": "jail"}, "sandboxes:create"),
        ("GET", f"/v1/sandboxes/{sid}", None, "sandboxes:read"),
        ("POST", f"/v1/sandboxes/{sid}/exec", {"cmd": ["true"]}, "sandboxes:exec"),
        ("PUT", f"/v1/sandboxes/{sid}/files?path=/workspace/g", b"x", "sandboxes:exec"),
        ("GET", f"/v1/sandboxes/{sid}/files?path=/workspace/f", None, "sandboxes:exec"),
        ("DELETE", "/v1/sandboxes/sb-0000000000000000", None, "sandboxes:create"),
        ("GET", "/v1/keys", None, "keys:manage"),
        ("POST", "/v1/keys", {"name": "x", "scopes": ["tasks:read"]}, "keys:manage"),
        ("DELETE", "/v1/keys/key_000000000000", None, "keys:manage"),
        ("GET", "/v1/users", None, "admin:users"),
        ("POST", "/v1/users", {"username": "x", "password": FIRST_PASSWORD, "team_id": "tm_x",
                               "role": "viewer"}, "admin:users"),
        ("GET", "/v1/teams", None, "admin:users"),
        ("POST", "/v1/teams", {"name": "zz"}, "admin:users"),
        ("GET", "/v1/audit", None, "audit:read"),
        ("GET", "/v1/audit/verify", None, "audit:read"),
        ("GET", "/metrics", None, "audit:read"),
    ]


def call(env, cred, method, path, body):
    key = env["keys"].get(cred)
    c = env["g"].client(key)
    headers = None
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    elif body is not None:
        headers = {"Content-Type": "application/octet-stream"}   # file uploads take bytes
    return c.request(method, path, body=body, headers=headers, raw=True)


def audit_for(env, request_id):
    """The audit entries a request produced."""
    found, after = [], 0
    while True:
        page = env["admin"].audit(after_seq=after, limit=1000)["entries"]
        found += [e for e in page if e["request_id"] == request_id]
        if len(page) < 1000:
            return found
        after = page[-1]["seq"]


CREDS_401 = ["none", "malformed", "unknown", "revoked", "expired"]


@pytest.mark.parametrize("cred", CREDS_401)
@pytest.mark.parametrize("idx", range(17))
def test_bad_credentials_get_401(env, cred, idx):
    method, path, body, _ = routes(env["sandbox"]["id"])[idx]
    st, hdr, data = call(env, cred, method, path, body)
    assert st == 401, (method, path, data)
    assert json.loads(data)["error"]["code"] == "unauthorized"
    rid = {k.lower(): v for k, v in hdr.items()}["x-request-id"]
    entries = audit_for(env, rid)
    assert [(e["event"], e["outcome"]) for e in entries] == [("auth", "denied")]
    reason = entries[0]["reason"]
    assert reason == {"none": "missing", "malformed": "malformed", "unknown": "unknown",
                      "revoked": "revoked", "expired": "expired"}[cred]


@pytest.mark.parametrize("idx", range(17))
def test_missing_scope_gets_403(env, idx):
    method, path, body, needs = routes(env["sandbox"]["id"])[idx]
    st, hdr, data = call(env, "narrow", method, path, body)
    rid = {k.lower(): v for k, v in hdr.items()}["x-request-id"]
    entries = audit_for(env, rid)
    if "/v1/sandboxes/sb-" in path or "/v1/keys/key_" in path:
        assert st in (403, 404), data
    else:
        assert st == 403, (method, path, data)
        assert json.loads(data)["error"]["code"] == "forbidden"
    perms = [e for e in entries if e["event"] == "permission"]
    assert perms and perms[-1]["outcome"] == "denied"


@pytest.mark.parametrize("idx", [2, 3, 4, 5])
def test_other_teams_sandbox_is_404(env, idx):
    method, path, body, _ = routes(env["sandbox"]["id"])[idx]
    st, hdr, data = call(env, "other_team", method, path, body)
    assert st == 404, data
    assert json.loads(data)["error"]["code"] == "not_found"
    rid = {k.lower(): v for k, v in hdr.items()}["x-request-id"]
    perms = [e for e in audit_for(env, rid) if e["event"] == "permission"]
    assert perms[-1]["outcome"] == "denied"
    assert "another team" in perms[-1]["reason"]


def test_other_teams_sandbox_is_not_listed(env):
    c = env["g"].client(env["keys"]["other_team"])
    assert env["sandbox"]["id"] not in [s["id"] for s in c.list_sandboxes()["sandboxes"]]


@pytest.mark.parametrize("idx", [0, 2, 3, 4, 5, 7, 8])
def test_allowed(env, idx):
    method, path, body, _ = routes(env["sandbox"]["id"])[idx]
    st, hdr, data = call(env, "allowed", method, path, body)
    assert 200 <= st < 300, (method, path, data)
    rid = {k.lower(): v for k, v in hdr.items()}["x-request-id"]
    entries = audit_for(env, rid)
    assert ("auth", "allowed") in [(e["event"], e["outcome"]) for e in entries]
    assert ("permission", "allowed") in [(e["event"], e["outcome"]) for e in entries]


@pytest.mark.parametrize("idx", [10, 11, 12, 13, 14, 15, 16])
def test_admin_only_routes_for_admin(env, idx):
    method, path, body, _ = routes(env["sandbox"]["id"])[idx]
    if idx == 11:
        body = dict(body, team_id=env["admin"].list_teams()["teams"][0]["id"], username="authz-new")
    c = env["g"].admin()
    st, hdr, data = c.request(method, path, body=json.dumps(body).encode() if isinstance(body, dict) else body,
                              raw=True)
    assert 200 <= st < 300, (method, path, data)


def test_revocation_is_immediate(env):
    admin = env["admin"]
    k = admin.create_key(name="short", scopes=["sandboxes:read"])
    c = env["g"].client(k["key"])
    assert "sandboxes" in c.list_sandboxes()
    admin.delete_key(k["id"])
    st, _, _ = c.request("GET", "/v1/sandboxes", raw=True)
    assert st == 401


def test_scopes_cannot_exceed_the_owner(env):
    c = env["g"].client(env["keys"]["allowed"])   # a developer
    st, _, data = c.request("POST", "/v1/keys", body=json.dumps(
        {"name": "escalate", "scopes": ["admin:users"]}).encode(), raw=True)
    assert st in (400, 403), data

"""Console sessions through a real `forgebox serve`: password login, the
fbx_session cookie's exact attributes, only the token's digest in the
database, the cookie as a credential, CSRF (token and Origin/Referer) on
every changing request, Bearer keys unaffected, logout, expiry, the
per-user limit, failed-login rate limits, and the audit entry of each.

No sandbox is needed: the routes used here are identity ones.
"""
import hashlib
import http.client
import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import time

import pytest

from gateway_fixtures import FIRST_PASSWORD, SECRETS, Gateway

TOKEN_RE = re.compile(r"^fbs_[A-Za-z0-9_-]{43}$")


def http_call(g, method, path, body=None, headers=None, tls=None):
    """(status, headers, decoded body) of one request, no key added."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", g.port, timeout=30, context=tls)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    text = json.loads(raw) if raw and resp.headers.get("Content-Type", "").startswith("application/json") else raw
    return resp.status, resp.headers, text


def login(g, username, password, headers=None, tls=None):
    return http_call(g, "POST", "/v1/sessions", {"username": username, "password": password}, headers, tls)


def cookie_of(headers):
    sc = headers.get_all("Set-Cookie") or []
    assert len(sc) == 1, sc
    return sc[0]


def token_of(headers):
    m = re.match(r"^fbx_session=([^;]*);", cookie_of(headers))
    assert m, cookie_of(headers)
    return m.group(1)


class Session:
    """A logged-in browser, as far as the gateway can tell."""

    def __init__(self, g, username="admin", password=FIRST_PASSWORD):
        status, headers, body = login(g, username, password)
        assert status == 201, body
        self.g, self.token, self.body = g, token_of(headers), body
        self.csrf = body["csrf_token"]
        self.origin = f"http://127.0.0.1:{g.port}"
        SECRETS.add(self.token)

    def call(self, method, path, body=None, csrf=True, origin=True, extra=None):
        h = {"Cookie": f"fbx_session={self.token}"}
        if csrf is not False:
            h["X-CSRF-Token"] = self.csrf if csrf is True else csrf
        if origin is not False:
            h["Origin"] = self.origin if origin is True else origin
        h.update(extra or {})
        return http_call(self.g, method, path, body, h)


def audit(g, **filters):
    return g.admin().audit(limit=1000, **filters)["entries"]


def entries(g, event=None, action=None, outcome=None, request_id=None):
    out = audit(g)
    return [e for e in out if (event is None or e["event"] == event) and (action is None or e["action"] == action)
            and (outcome is None or e["outcome"] == outcome)
            and (request_id is None or e["request_id"] == request_id)]


@pytest.fixture(scope="module")
def gw():
    g = Gateway(settings=["limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    yield g
    assert g.stop() == 0, g.read_log()


# ---- login ---------------------------------------------------------------------------------


def test_login_answers_csrf_user_expiry_and_an_exact_cookie(gw):
    status, headers, body = login(gw, "admin", FIRST_PASSWORD)
    assert status == 201
    assert set(body) == {"session_id", "csrf_token", "user", "permissions", "expires_at"}
    assert "admin:users" in body["permissions"] and "audit:read" in body["permissions"]
    assert body["user"]["username"] == "admin" and body["user"]["role"] == "admin"
    assert re.match(r"^ses_[0-9a-f]{16}$", body["session_id"])
    assert re.match(r"^[A-Za-z0-9_-]{43}$", body["csrf_token"])
    tok = token_of(headers)
    SECRETS.add(tok)
    assert TOKEN_RE.match(tok)
    assert cookie_of(headers) == f"fbx_session={tok}; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800"
    assert tok not in json.dumps(body)
    e = entries(gw, event="session", action="login", outcome="allowed", request_id=headers["X-Request-Id"])
    assert len(e) == 1 and e[0]["resource"] == body["session_id"]
    assert e[0]["actor"] == "user:" + body["user"]["id"]


@pytest.mark.parametrize("username,password,why", [
    ("admin", "wrong password, long enough", "bad_secret"),
    ("nobody-here", FIRST_PASSWORD, "unknown"),
])
def test_wrong_credentials_are_401_without_a_cookie_and_audited(gw, username, password, why):
    status, headers, body = login(gw, username, password)
    assert status == 401
    assert body["error"] == {"code": "unauthorized", "message": "wrong username or password"}
    assert headers.get_all("Set-Cookie") is None
    e = entries(gw, event="session", action="login", outcome="denied", request_id=headers["X-Request-Id"])
    assert len(e) == 1 and e[0]["reason"] == f'{why} (username "{username}")'


def test_login_from_a_foreign_origin_is_refused(gw):
    status, headers, body = login(gw, "admin", FIRST_PASSWORD, headers={"Origin": "http://evil.example"})
    assert status == 403 and headers.get_all("Set-Cookie") is None
    assert len(entries(gw, event="session", outcome="denied", request_id=headers["X-Request-Id"])) == 1


def test_only_the_tokens_digest_is_stored(gw):
    s = Session(gw)
    db = sqlite3.connect(f"file:{gw.state}/forgebox.db?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, token_hash, user_id, expires_at FROM sessions WHERE id = ?",
                          (s.body["session_id"],)).fetchall()
        cols = [r[1] for r in db.execute("PRAGMA table_info(sessions)")]
    finally:
        db.close()
    assert len(rows) == 1
    assert rows[0][1] == hashlib.blake2b(s.token.encode(), digest_size=32).digest()
    assert cols == ["id", "token_hash", "user_id", "created_at", "expires_at", "source_ip"]
    for name in os.listdir(gw.state):
        path = os.path.join(gw.state, name)
        if os.path.isfile(path):
            data = open(path, "rb").read()
            assert s.token.encode() not in data, name
            assert s.token[4:].encode() not in data, name
            assert s.csrf.encode() not in data, name


# ---- the cookie as a credential --------------------------------------------------------------


def test_cookie_authenticates_with_the_users_role(gw):
    s = Session(gw)
    status, headers, body = s.call("GET", "/v1/teams", csrf=False, origin=False)
    assert status == 200 and any(t["name"] == "default" for t in body["teams"])
    e = entries(gw, event="auth", outcome="allowed", request_id=headers["X-Request-Id"])
    assert [x["reason"] for x in e] == [f"session {s.body['session_id']}"]
    assert e[0]["actor"] == "user:" + s.body["user"]["id"]
    status, _, cur = s.call("GET", "/v1/sessions/current", csrf=False, origin=False)
    assert status == 200
    assert cur == {"session_id": s.body["session_id"], "csrf_token": s.csrf, "user": s.body["user"],
                   "permissions": s.body["permissions"], "expires_at": s.body["expires_at"]}


def test_a_viewer_session_gets_the_viewers_permissions_only(gw):
    admin = gw.admin()
    team = admin.create_team("sess-view")
    pw = "viewer password 1234"
    SECRETS.add(pw)
    admin.create_user(username="sess-viewer", password=pw, team_id=team["id"], role="viewer")
    s = Session(gw, "sess-viewer", pw)
    assert s.body["user"]["role"] == "viewer"
    assert s.call("GET", "/v1/users", csrf=False, origin=False)[0] == 403
    assert s.call("GET", "/v1/audit", csrf=False, origin=False)[0] == 403
    assert s.call("POST", "/v1/sandboxes", {"backend": "jail"})[0] == 403
    assert s.call("GET", "/v1/sandboxes", csrf=False, origin=False)[0] == 200


@pytest.mark.parametrize("case", ["bad-syntax", "unknown"])
def test_a_bad_cookie_is_401_and_audited(gw, case):
    tok = "garbage" if case == "bad-syntax" else "fbs_" + "A" * 43
    status, headers, _ = http_call(gw, "GET", "/v1/teams", headers={"Cookie": f"fbx_session={tok}"})
    assert status == 401
    e = entries(gw, event="auth", outcome="denied", request_id=headers["X-Request-Id"])
    assert [x["reason"] for x in e] == ["malformed" if case == "bad-syntax" else "unknown"]


# ---- CSRF ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,csrf,origin,extra,why", [
    ("no-token", False, True, None, "missing X-CSRF-Token"),
    ("wrong-token", "A" * 43, True, None, "X-CSRF-Token does not match"),
    ("empty-token", "", True, None, "X-CSRF-Token does not match"),
    ("foreign-origin", True, "http://evil.example", None, "Origin is not this gateway's own"),
    ("null-origin", True, "null", None, "Origin is not this gateway's own"),
    ("other-port", True, "http://127.0.0.1:1", None, "Origin is not this gateway's own"),
    ("no-origin-no-referer", True, False, None, "neither Origin nor Referer"),
    ("foreign-referer", True, False, {"Referer": "http://evil.example/page"}, "Origin is not this gateway's own"),
    ("prefix-referer", True, False, {"Referer": "http://127.0.0.1:{port}0/x"}, "Origin is not this gateway's own"),
])
def test_changing_requests_with_a_cookie_need_csrf_token_and_own_origin(gw, case, csrf, origin, extra, why):
    s = Session(gw)
    if extra:
        extra = {k: v.replace("{port}", str(gw.port)) for k, v in extra.items()}
    name = "csrf-" + case
    status, headers, body = s.call("POST", "/v1/teams", {"name": name}, csrf=csrf, origin=origin, extra=extra)
    assert status == 403, body
    assert body["error"]["code"] == "forbidden" and body["error"]["message"].startswith(why)
    assert name not in [t["name"] for t in gw.admin().list_teams()["teams"]]
    e = entries(gw, event="auth", action="csrf", outcome="denied", request_id=headers["X-Request-Id"])
    assert len(e) == 1 and e[0]["reason"].startswith(why)
    # Logging out is a change too.
    status, _, _ = s.call("DELETE", "/v1/sessions/current", csrf=csrf, origin=origin, extra=extra)
    assert status == 403
    assert s.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 200


@pytest.mark.parametrize("how", ["origin", "referer"])
def test_changing_requests_pass_with_the_token_and_own_origin_or_referer(gw, how):
    s = Session(gw)
    name = "csrf-ok-" + how
    if how == "origin":
        status, _, body = s.call("POST", "/v1/teams", {"name": name})
    else:
        status, _, body = s.call("POST", "/v1/teams", {"name": name}, origin=False,
                                 extra={"Referer": f"http://127.0.0.1:{gw.port}/console/people"})
    assert status == 201, body
    assert name in [t["name"] for t in gw.admin().list_teams()["teams"]]


def test_bearer_requests_are_unchanged(gw):
    s = Session(gw)
    admin = gw.client(gw.admin_key)
    # No CSRF token, no Origin: a key is not a browser credential.
    r = admin.request("POST", "/v1/teams", body={"name": "bearer-plain"})
    assert r.status == 201
    # A foreign Origin and a cookie beside the key change nothing: the key decides.
    r = admin.request("POST", "/v1/teams", body={"name": "bearer-origin"},
                      headers={"Origin": "http://evil.example", "Cookie": f"fbx_session={s.token}"})
    assert r.status == 201
    e = entries(gw, event="auth", outcome="allowed", request_id=r.headers["X-Request-Id"])
    assert [x["reason"] for x in e] == ["api key"]
    # A bad key with a good cookie is still a bad key.
    bad = gw.client("fbk_0123456789ab_" + "A" * 43)
    assert bad.request("GET", "/v1/teams", headers={"Cookie": f"fbx_session={s.token}"}).status == 401
    # GET /v1/sessions/current with a key: there is no session.
    assert admin.request("GET", "/v1/sessions/current").status == 404


# ---- logout -------------------------------------------------------------------------------------------


def test_logout_ends_the_session_clears_the_cookie_and_is_audited(gw):
    s = Session(gw)
    status, headers, _ = s.call("DELETE", "/v1/sessions/current")
    assert status == 204
    assert cookie_of(headers) == "fbx_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
    e = entries(gw, event="session", action="logout", outcome="allowed", request_id=headers["X-Request-Id"])
    assert len(e) == 1 and e[0]["resource"] == s.body["session_id"]
    assert s.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 401
    db = sqlite3.connect(f"file:{gw.state}/forgebox.db?mode=ro", uri=True)
    try:
        assert db.execute("SELECT COUNT(*) FROM sessions WHERE id = ?", (s.body["session_id"],)).fetchone()[0] == 0
    finally:
        db.close()


def test_config_is_admin_only_and_redacted(gw):
    s = Session(gw)
    status, _, body = s.call("GET", "/v1/config", csrf=False, origin=False)
    assert status == 200
    assert body["console"] == {"session_ttl_s": 28800, "max_sessions_per_user": 5, "max_login_failures": 5}
    assert body["limits"]["rate_rps"] == 1000
    pw = "developer password 99"
    SECRETS.add(pw)
    admin = gw.admin()
    team = admin.create_team("sess-dev")
    admin.create_user(username="sess-dev", password=pw, team_id=team["id"], role="developer")
    d = Session(gw, "sess-dev", pw)
    assert d.call("GET", "/v1/config", csrf=False, origin=False)[0] == 403


# ---- expiry, the per-user limit, failed-login limits (their own gateways) --------------------------


def test_sessions_expire_and_the_expiry_is_audited():
    g = Gateway(settings=["console.session_ttl_s=2"])
    g.init()
    g.start()
    try:
        s = Session(g)
        assert cookie_of(login(g, "admin", FIRST_PASSWORD)[1]).endswith("Max-Age=2")
        assert s.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 200
        time.sleep(2.5)
        status, headers, _ = s.call("GET", "/v1/sessions/current", csrf=False, origin=False)
        assert status == 401
        e = entries(g, event="session", action="expire")
        assert s.body["session_id"] in [x["resource"] for x in e]
        assert all(x["outcome"] == "allowed" and x["reason"] == "the session's lifetime ended" for x in e)
        assert len([x for x in e if x["resource"] == s.body["session_id"]]) == 1
        assert [x["reason"] for x in entries(g, event="auth", request_id=headers["X-Request-Id"])] == ["expired"]
    finally:
        assert g.stop() == 0, g.read_log()


def test_a_user_holds_at_most_the_configured_number_of_sessions():
    g = Gateway(settings=["console.max_sessions_per_user=2"])
    g.init()
    g.start()
    try:
        s1, s2, s3 = Session(g), Session(g), Session(g)
        assert s1.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 401
        assert s2.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 200
        assert s3.call("GET", "/v1/sessions/current", csrf=False, origin=False)[0] == 200
        e = entries(g, event="session", action="evict")
        assert [(x["resource"], x["reason"]) for x in e] == \
            [(s1.body["session_id"], "more than 2 sessions for this user")]
    finally:
        assert g.stop() == 0, g.read_log()


def test_failed_logins_are_rate_limited_per_user_and_per_address():
    g = Gateway(settings=["console.max_login_failures=3"])
    g.init()
    g.start()
    try:
        admin = g.admin()
        pw = "carol password 12345"
        SECRETS.add(pw)
        admin.create_user(username="carol", password=pw, team_id=admin.list_teams()["teams"][0]["id"],
                          role="developer")
        for _ in range(3):
            assert login(g, "carol", "not carol's password")[0] == 401
        # The right password no longer helps: refused before it is checked.
        status, headers, body = login(g, "carol", pw)
        assert status == 429 and body["error"]["code"] == "rate_limited"
        assert 800 <= int(headers["Retry-After"]) <= 901
        assert body["error"]["message"].startswith("too many failed logins for this user")
        assert login(g, "carol", pw)[0] == 429
        refusals = entries(g, event="session", action="login", outcome="denied")
        assert len([x for x in refusals if x["reason"] == "too many failed logins for this user"]) == 1
        assert len([x for x in refusals if x["reason"].startswith("bad_secret")]) == 3
        # Other users are fine until the address itself is over 4 x 3.
        assert login(g, "admin", FIRST_PASSWORD)[0] == 201
        for i in range(9):
            assert login(g, f"ghost{i}", "whatever password")[0] == 401
        status, _, body = login(g, "admin", FIRST_PASSWORD)
        assert status == 429 and body["error"]["message"].startswith("too many failed logins from this address")
    finally:
        assert g.stop() == 0, g.read_log()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed (needed to make a test certificate)")
def test_the_cookie_is_secure_when_tls_is_on(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    g = Gateway(settings=[f"tls.cert={cert}", f"tls.key={key}"])
    g.url = g.url.replace("http://", "https://")
    g.init()
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False
    g.client = lambda key=None: __import__("gateway_fixtures").RecordingClient(g.url, api_key=key, context=ctx)
    g.start()
    try:
        status, headers, body = login(g, "admin", FIRST_PASSWORD, tls=ctx)
        assert status == 201
        tok = token_of(headers)
        SECRETS.add(tok)
        assert cookie_of(headers) == f"fbx_session={tok}; HttpOnly; SameSite=Strict; Path=/; Max-Age=28800; Secure"
        # The own origin is https:// there.
        h = {"Cookie": f"fbx_session={tok}", "X-CSRF-Token": body["csrf_token"]}
        assert http_call(g, "POST", "/v1/teams", {"name": "tls-a"},
                         dict(h, Origin=f"http://127.0.0.1:{g.port}"), tls=ctx)[0] == 403
        assert http_call(g, "POST", "/v1/teams", {"name": "tls-b"},
                         dict(h, Origin=f"https://127.0.0.1:{g.port}"), tls=ctx)[0] == 201
    finally:
        assert g.stop() == 0, g.read_log()

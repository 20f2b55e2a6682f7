"""The admin console in a real browser (Debian's chromium, headless, driven
through chromium-driver and python3-selenium) against a real `forgebox
serve` (jail backend) with the scripted model provider (tests/tools/fake_llm.py).

The walk: wrong password, login, create a sandbox, run a command and watch
its output stream, upload and download a file, kill the sandbox, approve a
held tool call of a task, create and revoke an API key, read, filter,
verify and export the audit log, the settings page, a viewer's reduced
console, logout.  Attacks: <script>, <img onerror>, javascript: links and a
very long line in command output, file names, task text (prompt, model
text, tool input) and audit reasons - each must show up as text, with no
element created and nothing run; a page of another origin posting to the
gateway with the victim's cookie is refused.  A screenshot of each page goes
to build/console-screenshots/.

The header checks at the top (CSP and the rest, exact; content types; the
digests; no inline script or style in the files) need no browser and
always run.  The browser tests skip, saying why, only where chromium,
chromium-driver or python3-selenium is missing (scripts/install-deps.sh
installs them, so they run in CI).
"""
import hashlib
import http.client
import http.server
import json
import os
import re
import shlex
import shutil
import threading
import time

import pytest

from conftest import ROOT
from gateway_fixtures import FIRST_PASSWORD, SECRETS
from test_task_service import KEY, TaskGateway, call

import sys
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from fake_llm import FakeLLM  # noqa: E402

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
CONSOLE_DIR = os.path.join(ROOT, "console")
SHOTS = os.path.join(ROOT, "build", "console-screenshots")

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, TimeoutException
    from selenium.webdriver.chrome.service import Service as ChromeService
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
MISSING = [n for n, ok in (("chromium", CHROMIUM), ("chromium-driver", CHROMEDRIVER),
                           ("python3-selenium", HAVE_SELENIUM)) if not ok]
browser = pytest.mark.skipif(bool(MISSING), reason="the console's browser tests need " + ", ".join(MISSING) +
                             " (apt-get install -y chromium chromium-driver python3-selenium)")

# Each payload sets window.__xss (or opens an alert) if it ever runs.
XSS = [
    "<script>window.__xss='script'</script>",
    "<img src=x onerror=\"window.__xss='img'\">",
    "<a href=\"javascript:window.__xss='link'\">click me</a>",
    "<svg onload=\"window.__xss='svg'\"></svg>",
]
LONG = "L" * 200000


def console_files():
    out = []
    for d, _, files in os.walk(CONSOLE_DIR):
        for f in files:
            out.append(os.path.relpath(os.path.join(d, f), CONSOLE_DIR))
    return sorted(out)


@pytest.fixture(scope="module")
def env():
    with FakeLLM(key=KEY, models={"m1"}) as fake:
        g = TaskGateway(fake.url, settings=["sandbox.backend=jail", "limits.rate_rps=1000",
                                            "limits.rate_burst=1000", "tasks.approval_timeout_s=120",
                                            "tasks.ttl_s=0"])
        g.init()
        g.start()
        admin = g.admin()
        team = admin.list_teams()["teams"][0]
        dev = admin.create_user(username="console-dev", password=FIRST_PASSWORD, team_id=team["id"], role="developer")
        admin.create_user(username="console-viewer", password=FIRST_PASSWORD, team_id=team["id"], role="viewer")
        dev_key = admin.create_key(name="dev", user_id=dev["id"],
                                   scopes=["tasks:create", "tasks:read", "tools:shell", "sandboxes:create",
                                           "sandboxes:read", "sandboxes:exec"])["key"]
        yield {"g": g, "fake": fake, "admin": admin, "dev": g.client(dev_key)}
        assert g.stop() == 0, g.read_log()


def get(g, path):
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


# ---- headers and files (no browser) ----------------------------------------------------------


TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}


def test_every_console_file_has_exact_security_headers_type_and_digest(env):
    files = console_files()
    assert "index.html" in files and "js/app.js" in files and "css/console.css" in files
    for rel in files:
        status, h, body = get(env["g"], "/console/" + rel)
        assert status == 200, rel
        assert h["Content-Security-Policy"] == CSP
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Referrer-Policy"] == "no-referrer"
        assert h["X-Frame-Options"] == "DENY"
        assert h["Content-Type"] == TYPES[os.path.splitext(rel)[1]], rel
        with open(os.path.join(CONSOLE_DIR, rel), "rb") as f:
            data = f.read()
        assert body == data
        assert h["ETag"] == '"%s"' % hashlib.sha256(data).hexdigest()
    status, h, body = get(env["g"], "/console/")
    assert status == 200 and h["Content-Security-Policy"] == CSP and b"<title>ForgeBox console</title>" in body


def test_console_paths_outside_the_table_are_404_and_redirects_are_exact(env):
    g = env["g"]
    for path in ["/console/nope.js", "/console/../forgebox.db", "/console/js/../index.html", "/console/%2e%2e/x",
                 "/console//index.html", "/console/js/"]:
        status, h, _ = get(g, path)
        assert status == 404, path
        assert h["Content-Security-Policy"] == CSP
    status, h, _ = get(g, "/console")
    assert status == 308 and h["Location"] == "/console/"
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    conn.request("POST", "/console/index.html", body=b"x")
    assert conn.getresponse().status == 405
    conn.close()


def test_no_inline_script_style_or_handler_in_the_files():
    for rel in console_files():
        with open(os.path.join(CONSOLE_DIR, rel), encoding="utf-8") as f:
            text = f.read()
        if rel.endswith(".html"):
            assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", text) == [], rel
            assert not re.search(r"<style", text), rel
            assert not re.search(r"\sstyle=", text), rel
            assert not re.search(r"\son[a-z]+=", text), rel
        if rel.endswith(".js"):
            code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
            for bad in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                        "new Function", "setAttribute('on", ".style."):
                assert bad not in code, (rel, bad)


# ---- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("console-browser")


@pytest.fixture(scope="module")
def driver(browser_dir):
    if MISSING:
        pytest.skip("the console's browser tests need " + ", ".join(MISSING))
    os.makedirs(SHOTS, exist_ok=True)
    downloads = browser_dir / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=ChromeService(executable_path=CHROMEDRIVER))
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    d.downloads = downloads
    yield d
    d.quit()


def wait(d, cond, timeout=30, what="condition"):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(lambda _: cond())
    except TimeoutException:
        shot(d, "failure-" + re.sub(r"[^a-z0-9]+", "-", what.lower())[:40])
        raise AssertionError(f"timed out waiting for {what}")


def el(d, css):
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found else None


def text_of(d, css):
    return d.execute_script("const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", css)


def texts(d, css):
    """The textContent of every element matching css, read in one step (no
    stale elements while the page re-renders)."""
    return d.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css)


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def no_xss(d, scope="main"):
    """Nothing ran and nothing became markup."""
    try:
        d.switch_to.alert
        raise AssertionError("an alert opened")
    except NoAlertPresentException:
        pass
    assert d.execute_script("return window.__xss === undefined"), d.execute_script("return window.__xss")
    made = d.execute_script(
        "const s = arguments[0];"
        "return [...document.querySelectorAll(s + ' script, ' + s + ' img, ' + s + ' svg, ' + s + ' iframe, '"
        " + s + ' a[href^=\"javascript\"]')].length", scope)
    assert made == 0
    # A long line wraps: the page never gets wider than the window.
    assert d.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


def go(d, env, hash_):
    d.execute_script("location.hash = arguments[0]", hash_)
    wait(d, lambda: d.execute_script("return document.body.dataset.page") == hash_.split("/")[1],
         what="page " + hash_)


def login(d, env, username, password):
    d.get(env["g"].url + "/console/")
    wait(d, lambda: el(d, "#login-form"), what="the login form")
    d.find_element(By.ID, "username").send_keys(username)
    d.find_element(By.ID, "password").send_keys(password)
    d.find_element(By.ID, "login-button").click()


def logout(d):
    d.find_element(By.ID, "logout").click()
    wait(d, lambda: el(d, "#login-form"), what="the login form after logout")


@browser
def test_wrong_password_then_login_and_overview(driver, env):
    d = driver
    login(d, env, "admin", "not the right password")
    wait(d, lambda: "wrong username or password" in text_of(d, "#login-error"), what="the login error")
    assert text_of(d, "#first-run").startswith("First run?")
    shot(d, "01-login-wrong-password")
    assert d.find_element(By.ID, "nav").get_attribute("hidden") is not None
    login(d, env, "admin", FIRST_PASSWORD)
    wait(d, lambda: el(d, "#ov-health") and el(d, "#ov-denials"), what="the overview")
    assert text_of(d, "#who") == "admin (admin)"
    # The cookie is HttpOnly: the page's script cannot read it.
    assert "fbx_session" not in d.execute_script("return document.cookie")
    assert d.get_cookie("fbx_session")["httpOnly"] is True
    assert d.get_cookie("fbx_session")["sameSite"] == "Strict"
    SECRETS.add(d.get_cookie("fbx_session")["value"])
    # An admin's capacity card: live sandboxes and the warm pools, from /metrics.
    wait(d, lambda: "forgebox_pool_ready{backend=\"jail\"}" in text_of(d, "#ov-capacity"),
         what="the pool gauges")
    assert "forgebox_pool_misses_total{backend=\"vm\"}" in text_of(d, "#ov-capacity")
    shot(d, "02-overview")


@browser
def test_sandbox_command_streams_files_and_kill(driver, env, browser_dir):
    d, g = driver, env["g"]
    go(d, env, "#/sandboxes")
    wait(d, lambda: el(d, "#sb-create"), what="the sandbox form")
    d.find_element(By.ID, "sb-backend").send_keys("jail")
    d.find_element(By.ID, "sb-create-button").click()
    wait(d, lambda: el(d, "#sb-id"), timeout=60, what="the sandbox page")
    sid = text_of(d, "#sb-id")
    assert re.match(r"^sb-[0-9a-f]+$", sid)
    assert any(s["id"] == sid for s in env["admin"].list_sandboxes()["sandboxes"])

    # Streamed output: the first line shows up while the command still runs.
    cmd = d.find_element(By.ID, "cmd")
    cmd.send_keys("echo first-line; sleep 2; echo second-line")
    d.find_element(By.ID, "cmd-run").click()
    wait(d, lambda: "first-line" in text_of(d, "#cmd-output"), what="the first line")
    assert "second-line" not in text_of(d, "#cmd-output")
    assert text_of(d, "#cmd-status") == "running…"
    wait(d, lambda: "second-line" in text_of(d, "#cmd-output"), what="the second line")
    wait(d, lambda: text_of(d, "#cmd-status") == "exit 0", what="the exit")
    assert text_of(d, "#cmd-output") == "first-line\nsecond-line\n"
    shot(d, "03-sandbox-command")

    # Output that looks like markup stays text; a 200 000-character line wraps.
    cmd.clear()
    cmd.send_keys("cat /workspace/x.txt")
    payload_file = browser_dir / "payload.txt"
    payload_file.write_text("\n".join(XSS) + "\n" + LONG + "\n")
    env["admin"].put_file(sid, "/workspace/x.txt", payload_file.read_bytes())
    d.find_element(By.ID, "cmd-run").click()
    wait(d, lambda: text_of(d, "#cmd-status") == "exit 0", what="cat's exit")
    assert text_of(d, "#cmd-output") == payload_file.read_text()
    no_xss(d)
    shot(d, "04-sandbox-xss-output")

    # Upload a file whose name is markup, list it, download it.
    evil_name = "<img src=x onerror=\"window.__xss='name'\">.txt"
    up = browser_dir / "upload"
    up.mkdir()
    (up / evil_name).write_bytes(b"uploaded through the console\n")
    d.find_element(By.ID, "fb-upload").send_keys(str(up / evil_name))
    d.find_element(By.ID, "fb-upload-button").click()
    wait(d, lambda: el(d, "#fb-uploaded") or el(d, "#fb-msg .error"), what="the upload")
    assert el(d, "#fb-uploaded"), text_of(d, "#fb-msg")
    assert env["admin"].get_file(sid, "/workspace/" + evil_name) == b"uploaded through the console\n"
    wait(d, lambda: evil_name in texts(d, ".fb-name"), what="the listed file")
    names = texts(d, ".fb-name")
    assert sorted(names) == sorted([evil_name, "x.txt"])
    no_xss(d)
    d.execute_script("[...document.querySelectorAll('.fb-row')].find(r => r.querySelector('.fb-name')"
                     ".textContent === 'x.txt').querySelector('.fb-download').click()")
    target = d.downloads / "x.txt"
    wait(d, lambda: target.exists() and target.read_bytes() == payload_file.read_bytes(), what="the download")
    shot(d, "05-sandbox-files")

    d.find_element(By.ID, "sb-kill").click()
    wait(d, lambda: d.execute_script("return location.hash") == "#/sandboxes" and el(d, "#sb-filter"),
         what="the list after kill")
    assert sid not in [s["id"] for s in env["admin"].list_sandboxes()["sandboxes"]]
    shot(d, "06-sandboxes")


@browser
def test_task_transcript_and_approval(driver, env):
    d, fake, dev = driver, env["fake"], env["dev"]
    fake.script = [{"text": "I will look. " + XSS[0] + XSS[1], "tool_calls": [
                        call("c1", "bash", command="printf '%s\\n' approved-ran " + shlex.quote(XSS[2]))]},
                   {"text": "done: " + XSS[3] + " " + LONG[:20000]}]
    prompt = "Task text " + XSS[1] + " " + "P" * 5000
    r = dev.request("POST", "/v1/tasks", {"prompt": prompt, "provider": "fake", "model": "m1",
                                          "backend": "jail", "tools": ["bash"], "approvals": ["bash"]})
    assert r.status == 201, r.body
    tid = r.body["id"]
    go(d, env, "#/tasks")
    wait(d, lambda: tid in texts(d, ".task-link"), what="the task in the list")
    no_xss(d)
    shot(d, "07-tasks")
    go(d, env, f"#/tasks/{tid}")
    wait(d, lambda: el(d, "#transcript .approval .approve"), timeout=60, what="the approval buttons")
    assert text_of(d, "#task-prompt-text") == prompt
    assert "I will look. " + XSS[0] + XSS[1] in text_of(d, "#transcript")
    assert "approved-ran" in text_of(d, "#transcript .approval pre")
    no_xss(d)
    shot(d, "08-task-approval")
    d.find_element(By.CSS_SELECTOR, "#transcript .approval .approve").click()
    wait(d, lambda: text_of(d, "#task-state") == "succeeded", timeout=60, what="the task's end")
    wait(d, lambda: "done: " + XSS[3] + " " + LONG[:20000] in text_of(d, "#transcript"), what="the final text")
    assert text_of(d, "#transcript .approval .approval-status") == "approved"
    assert "approved-ran" in text_of(d, "#transcript .tool_result")
    aps = dev.request("GET", f"/v1/tasks/{tid}/approvals").body["approvals"]
    admin_id = [u["id"] for u in env["admin"].list_users()["users"] if u["username"] == "admin"][0]
    assert [(a["state"], a["decided_by"]) for a in aps] == [("approved", "user:" + admin_id)] \
        or [(a["state"], a["decided_by"]) for a in aps] == [("approved", admin_id)]
    no_xss(d)
    shot(d, "09-task-done")


@browser
def test_keys_create_show_once_and_revoke(driver, env):
    d, g = driver, env["g"]
    go(d, env, "#/people")
    wait(d, lambda: el(d, "#key-create") and el(d, "#user-create"), what="the people page")
    d.find_element(By.ID, "key-name").send_keys("from-the-console")
    d.find_element(By.CSS_SELECTOR, '.key-scope[data-scope="sandboxes:read"]').click()
    d.execute_script("document.getElementById('key-expires').value = '2030-01-02T03:04'")
    local = d.execute_script("return new Date('2030-01-02T03:04').toISOString().replace(/\\.\\d+Z$/, 'Z')")
    d.find_element(By.ID, "key-create-button").click()
    wait(d, lambda: el(d, "#key-secret"), what="the new key")
    key = text_of(d, "#key-secret")
    SECRETS.add(key)
    assert re.match(r"^fbk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$", key)
    shot(d, "10-people-key-created")
    c = g.client(key)
    assert c.request("GET", "/v1/sandboxes").status == 200
    assert c.request("GET", "/v1/keys").status == 403          # only the scope it was given
    made = [k for k in env["admin"].list_keys()["keys"] if k["name"] == "from-the-console"]
    assert len(made) == 1 and made[0]["scopes"] == ["sandboxes:read"]
    assert made[0]["expires_at"].startswith(local[:-1]), (made[0]["expires_at"], local)
    key_id = "key_" + key[4:16]
    wait(d, lambda: el(d, f'tr[data-key="{key_id}"] .key-revoke'), what="the key's row")
    d.execute_script("document.querySelector(arguments[0]).click()", f'tr[data-key="{key_id}"] .key-revoke')
    wait(d, lambda: text_of(d, f'tr[data-key="{key_id}"] .key-status').startswith("revoked"), what="revoked")
    assert c.request("GET", "/v1/sandboxes").status == 401
    # The secret is shown once: the list never carries it.
    assert key not in d.page_source.replace(text_of(d, "#key-secret"), "")
    shot(d, "11-people-key-revoked")


@browser
def test_audit_page_filters_verifies_and_exports(driver, env):
    d, g = driver, env["g"]
    # A reason from the outside: a login attempt with a username that is markup.
    evil = "<img src=x onerror=alert(1)>"
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=30)
    conn.request("POST", "/v1/sessions", body=json.dumps({"username": evil, "password": "x" * 12}),
                 headers={"Content-Type": "application/json"})
    assert conn.getresponse().status == 401
    conn.close()
    # More than one page of entries (the API answers 1000 at a time, oldest
    # first): the page still shows the newest first.
    admin = env["admin"]
    for _ in range(600):
        assert admin.request("GET", "/v1/teams").status == 200
    newest, after = 0, 0
    while True:   # (each read adds its own entries: stop at a short page)
        page = admin.audit(after_seq=after, limit=1000)["entries"]
        newest = after = page[-1]["seq"]
        if len(page) < 1000:
            break
    assert newest > 1000
    go(d, env, "#/audit")
    wait(d, lambda: el(d, ".audit-row"), what="audit rows")
    first = int(texts(d, ".audit-row td:nth-child(1)")[0])
    assert newest <= first <= newest + 5          # (the page's own reads add a few)
    assert len(texts(d, ".audit-row")) == 1000
    d.find_element(By.ID, "af-event").send_keys("session")
    d.find_element(By.ID, "af-outcome").send_keys("denied")
    d.find_element(By.ID, "audit-apply").click()
    want = f'malformed (username "{evil}")'
    wait(d, lambda: set(texts(d, ".audit-row td:nth-child(4)")) == {"session"}
         and set(texts(d, ".audit-row td:nth-child(7)")) == {"denied"}, what="the filtered rows")
    assert want in texts(d, ".audit-reason")
    no_xss(d)
    d.find_element(By.ID, "audit-verify-button").click()
    wait(d, lambda: text_of(d, "#audit-verify-result").startswith("chain intact ("), what="verify")
    shot(d, "12-audit")
    d.find_element(By.ID, "audit-export").click()
    target = d.downloads / "forgebox-audit.jsonl"
    wait(d, lambda: target.exists() and target.stat().st_size > 0, what="the export")
    time.sleep(0.5)
    lines = [json.loads(x) for x in target.read_text().splitlines()]
    assert lines and all(x["event"] == "session" and x["outcome"] == "denied" for x in lines)
    assert any(x["reason"] == want for x in lines)
    assert [x["seq"] for x in lines] == sorted(x["seq"] for x in lines)


@browser
def test_settings_page_shows_the_configuration(driver, env):
    d = driver
    go(d, env, "#/settings")
    wait(d, lambda: el(d, "#settings-table"), what="the settings")
    rows = dict(zip(texts(d, "#settings-table tbody td:nth-child(1)"), texts(d, "#settings-table tbody td:nth-child(2)")))
    assert rows["sandbox.backend"] == "jail"
    assert rows["console.session_ttl_s"] == "28800"
    assert KEY not in d.page_source           # the provider's key is redacted
    shot(d, "13-settings")


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another origin (same host, another port) whose page tries to change
    things on the gateway with the visitor's cookie."""
    target = None

    def log_message(self, *a):
        pass

    def do_GET(self):
        page = ("<!doctype html><title>innocent</title><body>"
                "<form id=f method=POST action='%s/v1/teams' enctype='text/plain'>"
                "<input name='{\"name\":\"csrf-form\",\"x\":\"' value='\"}'></form>"
                "<script>"
                "fetch('%s/v1/teams', {method: 'POST', credentials: 'include', mode: 'no-cors',"
                " headers: {'Content-Type': 'text/plain'}, body: '{\"name\":\"csrf-fetch\"}'})"
                ".finally(() => { document.title = 'fetched'; document.getElementById('f').submit(); });"
                "</script></body>") % (self.target, self.target)
        data = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@browser
def test_a_page_of_another_origin_cannot_change_anything(driver, env):
    d, g = driver, env["g"]
    assert d.get_cookie("fbx_session")                   # the victim is logged in
    _AttackerPage.target = g.url
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    before = audit_count(env, "csrf")
    try:
        d.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        wait(d, lambda: audit_count(env, "csrf") >= before + 2, what="both forged requests refused")
        time.sleep(0.5)
    finally:
        srv.shutdown()
    teams = [t["name"] for t in env["admin"].list_teams()["teams"]]
    assert "csrf-form" not in teams and "csrf-fetch" not in teams
    denied = [e for e in env["admin"].audit(action="csrf", limit=1000)["entries"]][before:]
    assert len(denied) == 2
    assert all(e["outcome"] == "denied" and e["resource"] == "/v1/teams" and e["actor"].startswith("user:")
               and e["reason"].startswith("missing X-CSRF-Token") for e in denied)
    shot(d, "14-csrf-attempt")
    d.get(g.url + "/console/")
    wait(d, lambda: el(d, "#ov-health"), what="the console again")


def audit_count(env, action):
    return len(env["admin"].audit(action=action, limit=1000)["entries"])


@browser
def test_a_viewer_sees_only_what_the_role_can_use_then_logout(driver, env):
    d = driver
    logout(d)
    assert "fbx_session" not in [c["name"] for c in d.get_cookies()]
    status = d.execute_async_script(
        "const done = arguments[0]; fetch('/v1/sessions/current').then(r => done(r.status))")
    assert status == 401
    shot(d, "15-logged-out")
    login(d, env, "console-viewer", FIRST_PASSWORD)
    wait(d, lambda: el(d, "#ov-health"), what="the viewer's overview")
    visible = texts(d, "#nav a:not([hidden])")
    perms = d.execute_script("return fetch('/v1/sessions/current').then(r => r.json()).then(j => j.permissions)")
    assert "audit:read" not in perms or "Audit" not in visible
    assert "Audit" not in visible and "Settings" not in visible          # admins only
    assert ("Sandboxes" in visible) == ("sandboxes:read" in perms)
    assert ("People & keys" in visible) == ("keys:manage" in perms)
    assert el(d, "#ov-denials") is None and el(d, "#ov-capacity") is None
    shot(d, "16-viewer-overview")
    if "sandboxes:read" in perms:
        go(d, env, "#/sandboxes")
        wait(d, lambda: el(d, "#sb-filter"), what="the viewer's sandboxes")
        assert (el(d, "#sb-create") is not None) == ("sandboxes:create" in perms)
    logout(d)

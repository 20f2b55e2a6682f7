"""The organisation CA (`forgebox ca`) and mutual TLS on the gateway
(tls.client_ca): issue 12, item 3.

Certificates are made with the real CLI and read back with openssl; the
gateway is a real `forgebox serve` with tls.cert/tls.key issued by the CA
and tls.client_ca/tls.client_crl set, and the clients are Python's ssl
(OpenSSL) and curl.  Every refusal is asserted exactly (status, error
code, verdict, the audit entry), and the gateway is shown to serve a good
client afterwards.
"""
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import time

import pytest

from conftest import FORGEBOX, EXIT_USAGE
from gateway_fixtures import Gateway, RecordingClient

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed (reads the certificates back)")


def ca(*args):
    return subprocess.run([FORGEBOX, "ca", *map(str, args)], capture_output=True, text=True, timeout=60)


def x509_text(path):
    return subprocess.run([OPENSSL, "x509", "-in", str(path), "-noout", "-text"], capture_output=True, text=True,
                          check=True).stdout


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def issue(cadir, role, name, out, *extra):
    p = ca("issue", "--dir", cadir, "--role", role, "--name", name, "--out", out, *extra)
    assert p.returncode == 0, p.stderr
    m = re.fullmatch(rf"issued {role} {re.escape(name)} serial ([0-9a-f]{{32}}): {re.escape(str(out))}\.crt "
                     rf"{re.escape(str(out))}\.key\n", p.stdout)
    assert m, p.stdout
    return m.group(1)


# ---- the CA's verbs ------------------------------------------------------------


def test_ca_init_issue_list_revoke(tmp_path):
    d = tmp_path / "ca"
    p = ca("init", "--dir", d, "--org", "acme", "--days", "30")
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"created the CA in {d}: ca.crt, ca.key (0600), crl.pem\n"
    assert mode(d) == 0o700 and mode(d / "ca.key") == 0o600 and mode(d / "ca.crt") == 0o644
    t = x509_text(d / "ca.crt")
    assert "Issuer: O = acme, CN = acme ForgeBox CA" in t and "Subject: O = acme, CN = acme ForgeBox CA" in t
    assert re.search(r"Basic Constraints: critical\n\s+CA:TRUE, pathlen:0\n", t), t
    assert re.search(r"Key Usage: critical\n\s+Certificate Sign, CRL Sign\n", t), t
    assert "ASN1 OID: prime256v1" in t

    # A second init refuses and leaves the CA exactly as it was.
    before = (d / "ca.key").read_bytes(), (d / "ca.crt").read_bytes()
    p = ca("init", "--dir", d)
    assert p.returncode == 1
    assert p.stderr == (f"forgebox: ca init: {d} already holds a CA; refusing to replace it (every certificate "
                        "it issued would stop working)\n")
    assert ((d / "ca.key").read_bytes(), (d / "ca.crt").read_bytes()) == before

    serial = issue(d, "node", "node-1", tmp_path / "n1", "--days", "10", "--dns", "node-1.internal",
                   "--ip", "127.0.0.1", "--ip", "::1")
    assert mode(tmp_path / "n1.key") == 0o600 and mode(tmp_path / "n1.crt") == 0o644
    t = x509_text(tmp_path / "n1.crt")
    assert "Subject: OU = node, CN = node-1" in t
    assert re.search(r"Subject Alternative Name: \n\s+URI:forgebox://node/node-1, DNS:node-1.internal, "
                     r"IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1\n", t), t
    assert re.search(r"Extended Key Usage: \n\s+TLS Web Server Authentication, TLS Web Client Authentication\n", t)
    assert re.search(r"Key Usage: critical\n\s+Digital Signature\n", t), t
    assert re.search(r"Basic Constraints: critical\n\s+CA:FALSE\n", t), t
    assert ":".join(serial[i:i + 2] for i in range(0, 32, 2)) in t
    nb = subprocess.run([OPENSSL, "x509", "-in", tmp_path / "n1.crt", "-noout", "-startdate", "-enddate"],
                        capture_output=True, text=True, check=True).stdout
    fmt = "%b %d %H:%M:%S %Y GMT"
    start = time.mktime(time.strptime(re.search(r"notBefore=(.*)", nb).group(1).replace("  ", " "), fmt))
    end = time.mktime(time.strptime(re.search(r"notAfter=(.*)", nb).group(1).replace("  ", " "), fmt))
    assert end - start == 10 * 86400 + 60
    v = subprocess.run([OPENSSL, "verify", "-CAfile", d / "ca.crt", tmp_path / "n1.crt"], capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout + v.stderr

    # Issuing onto existing files refuses and keeps them.
    key = (tmp_path / "n1.key").read_bytes()
    p = ca("issue", "--dir", d, "--role", "node", "--name", "node-1", "--out", tmp_path / "n1")
    assert p.returncode == 1
    assert p.stderr == f"forgebox: ca issue: {tmp_path}/n1.crt or {tmp_path}/n1.key exists already; not replacing it\n"
    assert (tmp_path / "n1.key").read_bytes() == key

    serial2 = issue(d, "gateway", "gw-a", tmp_path / "gw")
    ledger = [json.loads(l) for l in (d / "issued.jsonl").read_text().splitlines()]
    assert [(e["serial"], e["role"], e["name"]) for e in ledger] == [(serial, "node", "node-1"),
                                                                     (serial2, "gateway", "gw-a")]
    p = ca("list", "--dir", d, "--json")
    assert p.returncode == 0, p.stderr
    rows = [json.loads(l) for l in p.stdout.splitlines()]
    assert [(r["serial"], r["role"], r["name"], r["state"]) for r in rows] == [
        (serial, "node", "node-1", "valid"), (serial2, "gateway", "gw-a", "valid")]

    p = ca("revoke", "--dir", d, "--serial", serial.upper())
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"revoked 1 certificate(s); {d}/crl.pem re-signed\n"
    crl = subprocess.run([OPENSSL, "crl", "-in", d / "crl.pem", "-noout", "-text", "-CAfile", d / "ca.crt"],
                         capture_output=True, text=True)
    assert crl.returncode == 0 and "verify OK" in crl.stderr, crl.stderr
    assert f"Serial Number: {serial.upper()}" in crl.stdout and serial2.upper() not in crl.stdout
    assert "Next Update:" in crl.stdout
    assert [json.loads(l)["state"] for l in ca("list", "--dir", d, "--json").stdout.splitlines()] == ["revoked",
                                                                                                     "valid"]
    p = ca("revoke", "--dir", d, "--serial", "00ff")
    assert p.returncode == 1
    assert p.stderr == "forgebox: ca revoke: no certificate with serial \"00ff\" was issued by this CA\n"
    text = ca("list", "--dir", d).stdout.splitlines()
    assert text[0].split() == ["SERIAL", "ROLE", "NAME", "NOT_AFTER", "STATE"]
    assert text[1].split()[:3] == [serial, "node", "node-1"] and text[1].split()[4] == "revoked"


def test_ca_refuses_bad_arguments(tmp_path):
    d = tmp_path / "ca"
    assert ca("init", "--dir", d).returncode == 0
    p = ca("issue", "--dir", d, "--role", "admin", "--name", "x", "--out", tmp_path / "x")
    assert p.returncode == EXIT_USAGE
    assert p.stderr == "forgebox ca issue: --role node|gateway, --name NAME and --out PREFIX are required\n"
    p = ca("issue", "--dir", d, "--role", "node", "--name", "a/b", "--out", tmp_path / "x")
    assert p.returncode == 1
    assert p.stderr == "forgebox: ca issue: --name must be 1-64 of A-Z a-z 0-9 . _ - (not starting with . or -)\n"
    p = ca("issue", "--dir", d, "--role", "node", "--name", "n", "--out", tmp_path / "x", "--ip", "1.2.3")
    assert p.returncode == 1 and p.stderr == "forgebox: ca issue: --ip \"1.2.3\" is not an IP address\n"
    assert not (tmp_path / "x.key").exists() and not (tmp_path / "x.crt").exists()
    p = ca("issue", "--dir", tmp_path / "none", "--role", "node", "--name", "n", "--out", tmp_path / "y")
    assert p.returncode == 1 and p.stderr.startswith(f"forgebox: cannot read {tmp_path}/none/ca.crt: ")
    p = ca("revoke", "--dir", d)
    assert p.returncode == EXIT_USAGE
    assert p.stderr == "forgebox ca revoke: give exactly one of --serial HEX and --name NAME\n"
    p = ca("list")
    assert p.returncode == EXIT_USAGE


# ---- the gateway with mutual TLS --------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    t = tmp_path_factory.mktemp("pki")
    d = t / "ca"
    assert ca("init", "--dir", d, "--org", "acme").returncode == 0
    other = t / "other"
    assert ca("init", "--dir", other, "--org", "evil").returncode == 0
    issue(d, "gateway", "gw-server", t / "server", "--ip", "127.0.0.1")
    issue(d, "gateway", "gw-client", t / "good")
    issue(d, "gateway", "gw-doomed", t / "doomed")
    issue(d, "node", "node-1", t / "node")
    issue(other, "gateway", "gw-client", t / "foreign")
    issue(d, "gateway", "gw-old", t / "expired", "--backdate-days", "3", "--days", "1")
    issue(d, "gateway", "gw-new", t / "future", "--postdate-days", "2")
    return t


def ctx_for(pki, who=None, tls12=False):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.load_verify_locations(cafile=str(pki / "ca" / "ca.crt"))
    c.check_hostname = False
    if who:
        c.load_cert_chain(str(pki / f"{who}.crt"), str(pki / f"{who}.key"))
    if tls12:
        c.maximum_version = ssl.TLSVersion.TLSv1_2
    return c


def get(g, ctx, path="/healthz", key=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPSConnection("127.0.0.1", g.port, timeout=30, context=ctx)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"} if key else {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        if own:
            conn.close()


@pytest.fixture(scope="module")
def mtls_gateway(pki):
    g = Gateway(settings=[f"tls.cert={pki}/server.crt", f"tls.key={pki}/server.key",
                          f"tls.client_ca={pki}/ca/ca.crt", f"tls.client_crl={pki}/ca/crl.pem"])
    g.url = g.url.replace("http://", "https://")
    good = ctx_for(pki, "good")
    g.client = lambda key=None: RecordingClient(g.url, api_key=key, context=good)
    g.init()
    g.start()
    yield g
    g.close()


def refused(g, pki, who, verdict, reason):
    status, body = get(g, ctx_for(pki, who))
    assert status == 403, body
    assert body["error"]["code"] == "client_certificate"
    assert body["error"]["message"] == f"{verdict}: {reason}"
    return body


def audit_tls(g):
    entries = g.admin().audit(limit=500)["entries"]
    return [e for e in entries if e.get("event") == "tls"]


def still_serves(g, pki):
    assert get(g, ctx_for(pki, "good")) == (200, {"status": "ok"})


def test_a_gateway_certificate_from_the_ca_is_served(mtls_gateway, pki):
    assert get(mtls_gateway, ctx_for(pki, "good")) == (200, {"status": "ok"})
    status, body = get(mtls_gateway, ctx_for(pki, "good"), "/v1/teams", key=mtls_gateway.admin_key)
    assert status == 200 and [t["name"] for t in body["teams"]] == ["default"]


def test_no_certificate_is_refused_and_audited(mtls_gateway, pki):
    refused(mtls_gateway, pki, None, "no_certificate", "no client certificate was presented")
    e = audit_tls(mtls_gateway)[-1]
    assert (e["action"], e["outcome"], e["reason"]) == ("client_certificate", "denied",
                                                         "no_certificate: no client certificate was presented")
    still_serves(mtls_gateway, pki)


def test_another_ca_is_refused(mtls_gateway, pki):
    refused(mtls_gateway, pki, "foreign", "other_ca", "the certificate is not signed by this organisation's CA")
    still_serves(mtls_gateway, pki)


def test_an_expired_certificate_is_refused(mtls_gateway, pki):
    refused(mtls_gateway, pki, "expired", "expired", "the certificate has expired")
    still_serves(mtls_gateway, pki)


def test_a_certificate_not_valid_yet_is_refused(mtls_gateway, pki):
    refused(mtls_gateway, pki, "future", "not_yet_valid", "the certificate is not valid yet")
    still_serves(mtls_gateway, pki)


def test_the_wrong_role_is_403_and_audited(mtls_gateway, pki):
    refused(mtls_gateway, pki, "node", "wrong_role", "a node certificate (node-1) may not call this service")
    e = audit_tls(mtls_gateway)[-1]
    assert (e["resource"], e["outcome"], e["reason"]) == (
        "node-1", "denied", "wrong_role: a node certificate (node-1) may not call this service")
    still_serves(mtls_gateway, pki)


def test_a_revoked_certificate_is_refused_without_a_restart(mtls_gateway, pki):
    pid = mtls_gateway.proc.pid
    # A keep-alive connection opened before the revocation is cut off too.
    conn = http.client.HTTPSConnection("127.0.0.1", mtls_gateway.port, timeout=30, context=ctx_for(pki, "doomed"))
    try:
        assert get(mtls_gateway, None, conn=conn) == (200, {"status": "ok"})
        serial = [json.loads(l) for l in ca("list", "--dir", pki / "ca", "--json").stdout.splitlines()
                  if json.loads(l)["name"] == "gw-doomed"][0]["serial"]
        p = ca("revoke", "--dir", pki / "ca", "--name", "gw-doomed")
        assert p.returncode == 0, p.stderr
        status, body = get(mtls_gateway, None, conn=conn)
        assert status == 403
        assert body["error"]["message"] == f"revoked: the certificate (serial {serial}) is revoked"
    finally:
        conn.close()
    refused(mtls_gateway, pki, "doomed", "revoked", f"the certificate (serial {serial}) is revoked")
    assert mtls_gateway.proc.pid == pid and mtls_gateway.proc.poll() is None
    still_serves(mtls_gateway, pki)


def test_tls_1_2_is_refused_in_the_handshake(mtls_gateway, pki):
    with pytest.raises(ssl.SSLError) as ei:
        get(mtls_gateway, ctx_for(pki, "good", tls12=True))
    # GnuTLS ends the handshake (an alert, or a close before any
    # application data): no HTTP exchange takes place at all.
    assert isinstance(ei.value, (ssl.SSLZeroReturnError, ssl.SSLEOFError)) or \
        ei.value.reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"), ei.value
    # The same client certificate over TLS 1.3 is served: the version alone was refused.
    still_serves(mtls_gateway, pki)
    # The refused handshake is audited (event tls, action handshake) with the client's address.
    deadline = time.monotonic() + 10
    while True:
        hs = [e for e in audit_tls(mtls_gateway) if e["action"] == "handshake"]
        if hs or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(hs) == 1, hs
    assert hs[0]["source_ip"] == "127.0.0.1", hs[0]
    assert (hs[0]["outcome"], hs[0]["resource"], hs[0]["reason"]) == (
        "denied", "-", "the connection closed before any request: the TLS handshake was refused or abandoned "
                       "(mutual TLS takes TLS 1.3 only)")


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_the_certificate_and_without(mtls_gateway, pki):
    base = ["curl", "-sS", "--cacert", str(pki / "ca" / "ca.crt"), "--tlsv1.3",
            f"https://127.0.0.1:{mtls_gateway.port}/healthz"]
    ok = subprocess.run(base[:-1] + ["--cert", str(pki / "good.crt"), "--key", str(pki / "good.key"), base[-1]],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"status": "ok"}, ok.stderr
    no = subprocess.run(base + ["-w", "%{http_code}", "-o", "/dev/null"], capture_output=True, text=True, timeout=30)
    assert no.stdout == "403"


def test_the_task_cli_presents_its_certificate(mtls_gateway, pki):
    env = dict(os.environ, FORGEBOX_URL=mtls_gateway.url, FORGEBOX_API_KEY=mtls_gateway.admin_key,
               FORGEBOX_CLIENT_CA=str(pki / "ca" / "ca.crt"))
    p = subprocess.run([FORGEBOX, "task", "list", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0 and "403 client_certificate: no_certificate" in p.stderr, p.stderr
    env.update(FORGEBOX_CLIENT_CERT=str(pki / "good.crt"), FORGEBOX_CLIENT_KEY=str(pki / "good.key"))
    p = subprocess.run([FORGEBOX, "task", "list", "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    env.pop("FORGEBOX_CLIENT_KEY")
    p = subprocess.run([FORGEBOX, "task", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == EXIT_USAGE or p.returncode == 1
    assert "FORGEBOX_CLIENT_CERT and FORGEBOX_CLIENT_KEY must be set together (or neither)" in p.stderr


def test_client_roles_from_a_yaml_list(pki):
    g = Gateway(config=f"""tls:
  cert: {pki}/server.crt
  key: {pki}/server.key
  client_ca: {pki}/ca/ca.crt
  client_roles: [node]
""")
    g.url = g.url.replace("http://", "https://")
    node = ctx_for(pki, "node")
    g.client = lambda key=None: RecordingClient(g.url, api_key=key, context=node)
    g.init()
    g.start()
    try:
        assert get(g, node) == (200, {"status": "ok"})
        status, body = get(g, ctx_for(pki, "good"))
        assert status == 403
        assert body["error"]["message"] == "wrong_role: a gateway certificate (gw-client) may not call this service"
    finally:
        g.close()


def test_client_ca_needs_tls_and_roles_are_checked(tmp_path, pki):
    p = subprocess.run([FORGEBOX, "serve", "--state-dir", str(tmp_path), "--set", f"tls.client_ca={pki}/ca/ca.crt"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "tls.client_ca (--set): needs tls.cert and tls.key" in p.stderr, p.stderr
    p = subprocess.run([FORGEBOX, "serve", "--state-dir", str(tmp_path), "--set", "tls.client_roles=gateway,admin"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert 'unknown role "admin" (roles are node and gateway)' in p.stderr, p.stderr


def test_the_mcp_bridge_presents_its_certificate(mtls_gateway, pki):
    base = {"PATH": os.environ["PATH"], "FORGEBOX_URL": mtls_gateway.url, "FORGEBOX_API_KEY": mtls_gateway.admin_key,
            "FORGEBOX_CLIENT_CA": str(pki / "ca" / "ca.crt")}
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                       "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                  "clientInfo": {"name": "ca-test", "version": "1"}}}).encode() + b"\n"

    def run_bridge(extra):
        return subprocess.run([FORGEBOX, "mcp"], input=init, capture_output=True, timeout=60, env=dict(base, **extra))

    p = run_bridge({"FORGEBOX_CLIENT_CERT": str(pki / "good.crt"), "FORGEBOX_CLIENT_KEY": str(pki / "good.key")})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["result"]["protocolVersion"] == "2025-06-18"
    p = run_bridge({"FORGEBOX_CLIENT_CERT": str(pki / "node.crt"), "FORGEBOX_CLIENT_KEY": str(pki / "node.key")})
    err = json.loads(p.stdout.splitlines()[0])["error"]
    assert "wrong_role: a node certificate (node-1) may not call this service" in err["message"], err
    p = run_bridge({"FORGEBOX_CLIENT_CERT": str(pki / "good.crt")})
    assert p.returncode == EXIT_USAGE and p.stdout == b""
    assert b"FORGEBOX_CLIENT_CERT and FORGEBOX_CLIENT_KEY must be set together (or neither)" in p.stderr

"""Finding 14: keys minted by a key die with it.

A developer's key mints a child, the child mints a grandchild; revoking
the first key (as an attacker who leaked it would hope nobody does) must
leave none of them usable, at once, while keys that were not minted
through it keep working.  Everything goes through the real gateway and the
Python client; the audit log must record the revocation."""
import pytest

from gateway_fixtures import FIRST_PASSWORD, Gateway, forgebox_client

ApiError = forgebox_client.ApiError
SCOPES = ["sandboxes:read", "keys:manage"]


def refused(client):
    with pytest.raises(ApiError) as e:
        client.list_keys()
    return e.value.status


@pytest.fixture(scope="module")
def env():
    g = Gateway(settings=["sandbox.backend=jail", "limits.rate_rps=1000", "limits.rate_burst=1000"])
    g.init()
    g.start()
    admin = g.admin()
    team = admin.create_team("revoke-t")
    dev = admin.create_user(username="revoke-dev", password=FIRST_PASSWORD, team_id=team["id"], role="developer")
    other = admin.create_user(username="revoke-other", password=FIRST_PASSWORD, team_id=team["id"],
                              role="developer")
    yield {"g": g, "admin": admin, "dev": dev, "other": other}
    assert g.stop() == 0, g.read_log()


def test_revoking_a_key_revokes_what_it_minted(env):
    g, admin = env["g"], env["admin"]
    root = admin.create_key(name="leaked", scopes=SCOPES, user_id=env["dev"]["id"])
    sibling = admin.create_key(name="sibling", scopes=SCOPES, user_id=env["dev"]["id"])
    bystander = admin.create_key(name="bystander", scopes=SCOPES, user_id=env["other"]["id"])
    child = g.client(root["key"]).create_key(name="child", scopes=SCOPES)
    grandchild = g.client(child["key"]).create_key(name="grandchild", scopes=["sandboxes:read"])
    for k in (root, child, grandchild, sibling, bystander):
        g.client(k["key"]).list_sandboxes()  # all live before

    admin.delete_key(root["id"])

    for k in (root, child, grandchild):
        assert refused(g.client(k["key"])) == 401
    # Keys not minted through the revoked one are untouched.
    assert g.client(sibling["key"]).list_sandboxes() == {"sandboxes": []}
    assert g.client(bystander["key"]).list_sandboxes() == {"sandboxes": []}
    listed = {k["id"]: k for k in g.client(sibling["key"]).list_keys()["keys"]}
    for k in (root, child, grandchild):
        assert listed[k["id"]]["revoked_at"] is not None
    assert listed[sibling["id"]]["revoked_at"] is None
    # The whole tree carries one revocation time: one transaction.
    assert len({listed[k["id"]]["revoked_at"] for k in (root, child, grandchild)}) == 1

    # One entry for the key revoked by request, then one for each key that
    # went with it, saying why.
    entries = [e for e in admin.audit(action="revoke key")["entries"] if e["outcome"] == "allowed"]
    assert [e["resource"] for e in entries[-3:]] == [root["id"], child["id"], grandchild["id"]]
    assert [e["reason"] for e in entries[-2:]] == ["minted by a revoked key"] * 2
    assert admin.audit_verify()["intact"] is True


def test_revoking_a_child_leaves_its_parent(env):
    g, admin = env["g"], env["admin"]
    parent = admin.create_key(name="parent", scopes=SCOPES, user_id=env["dev"]["id"])
    child = g.client(parent["key"]).create_key(name="child2", scopes=SCOPES)
    grandchild = g.client(child["key"]).create_key(name="grandchild2", scopes=SCOPES)
    # The owner revokes the middle key with the parent key.
    g.client(parent["key"]).delete_key(child["id"])
    assert refused(g.client(child["key"])) == 401
    assert refused(g.client(grandchild["key"])) == 401
    assert g.client(parent["key"]).list_sandboxes() == {"sandboxes": []}
    # A revoked key cannot mint anything any more.
    with pytest.raises(ApiError) as e:
        g.client(child["key"]).create_key(name="late", scopes=SCOPES)
    assert e.value.status == 401

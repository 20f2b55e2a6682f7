/*
 * test_ca_verify.c - unit tests for the organisation CA and the peer
 * verifier (src/ca/).
 *
 * Every certificate is made here by the same functions `forgebox ca`
 * runs (fb_ca_init, fb_ca_issue, fb_ca_revoke) in a temporary directory;
 * the verifier then decides them as a service would.  Each typed refusal
 * is asserted with its exact reason, and the CRL's failure modes (changed
 * on disk, damaged, signed by another CA, removed) are attacked on purpose:
 * none of them may let a revoked certificate through.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ca/ca.h"

typedef struct fx {
    char tmp[64];
    char ca[128], other[128];
} fx;

static char path_buf[8][256];
static int path_i;
static const char *P(const fx *f, const char *name)
{
    char *b = path_buf[path_i++ % 8];
    snprintf(b, 256, "%s/%s", f->tmp, name);
    return b;
}

static void issue_at(const fx *f, const char *dir, fb_ca_role role, const char *name, unsigned days, unsigned back,
                     unsigned ahead)
{
    fb_ca_issue_req req = {.role = role, .name = name, .days = days, .backdate_days = back, .postdate_days = ahead};
    fb_err err = {{0}};
    char serial[64];
    int rc = fb_ca_issue(dir, &req, P(f, name), serial, sizeof serial, &err);
    if (rc != 0)
        fail_msg("issue %s: %s", name, err.msg);
    assert_int_equal(strlen(serial), 32);
}

static void issue_ok(const fx *f, const char *dir, fb_ca_role role, const char *name, unsigned days, unsigned back)
{
    issue_at(f, dir, role, name, days, back, 0);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    snprintf(f->tmp, sizeof f->tmp, "/tmp/fb-ca-unit-XXXXXX");
    assert_non_null(mkdtemp(f->tmp));
    snprintf(f->ca, sizeof f->ca, "%s/ca", f->tmp);
    snprintf(f->other, sizeof f->other, "%s/other", f->tmp);
    fb_err err = {{0}};
    assert_int_equal(fb_ca_init(f->ca, "acme", 30, &err), 0);
    assert_int_equal(fb_ca_init(f->other, "evil", 30, &err), 0);
    issue_ok(f, f->ca, FB_CA_ROLE_GATEWAY, "gw1", 10, 0);
    issue_ok(f, f->ca, FB_CA_ROLE_NODE, "node1", 10, 0);
    issue_ok(f, f->ca, FB_CA_ROLE_GATEWAY, "old", 1, 3);
    issue_ok(f, f->other, FB_CA_ROLE_GATEWAY, "alien", 10, 0);
    issue_at(f, f->ca, FB_CA_ROLE_GATEWAY, "future", 10, 0, 2);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    fb_rm_rf(f->tmp);
    free(f);
    return 0;
}

/* The DER of NAME.crt (data gnutls_free'd by the caller). */
static gnutls_datum_t der_of(const fx *f, const char *name)
{
    char file[128];
    snprintf(file, sizeof file, "%s.crt", name);
    char pem[8192];
    fb_err err = {{0}};
    assert_int_equal(fb_read_file(P(f, file), pem, sizeof pem, &err), 0);
    gnutls_datum_t in = {(unsigned char *)pem, (unsigned)strlen(pem)}, out = {0};
    assert_int_equal(gnutls_pem_base64_decode2("CERTIFICATE", &in, &out), 0);
    return out;
}

static fb_ca_verdict decide(fb_ca_verifier *v, const fx *f, const char *name, const char *want, fb_ca_peer *peer,
                            char *reason, size_t cap)
{
    gnutls_datum_t d = der_of(f, name);
    const void *der[1] = {d.data};
    size_t len[1] = {d.size};
    fb_ca_verdict r = fb_ca_verify_chain(v, der, len, 1, want, peer, reason, cap);
    gnutls_free(d.data);
    return r;
}

static fb_ca_verifier *open_v(const fx *f, unsigned roles, bool crl)
{
    char ca_crt[160], crl_pem[160];
    snprintf(ca_crt, sizeof ca_crt, "%s/ca.crt", f->ca);
    snprintf(crl_pem, sizeof crl_pem, "%s/crl.pem", f->ca);
    fb_ca_verifier *v = NULL;
    fb_err err = {{0}};
    if (fb_ca_verifier_open(ca_crt, crl ? crl_pem : NULL, roles, &v, &err) != 0)
        fail_msg("verifier: %s", err.msg);
    return v;
}

static void test_a_good_peer_and_its_identity(void **state)
{
    fx *f = *state;
    fb_ca_verifier *v = open_v(f, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY), true);
    fb_ca_peer peer;
    char why[300];
    assert_int_equal(decide(v, f, "gw1", NULL, &peer, why, sizeof why), FB_CA_OK);
    assert_int_equal(peer.role, FB_CA_ROLE_GATEWAY);
    assert_string_equal(peer.name, "gw1");
    assert_int_equal(strlen(peer.serial), 32);
    char want[200];
    snprintf(want, sizeof want, "gateway gw1 (serial %s)", peer.serial);
    assert_string_equal(why, want);
    assert_int_equal(decide(v, f, "gw1", "gw1", &peer, why, sizeof why), FB_CA_OK);
    assert_int_equal(decide(v, f, "gw1", "gw2", &peer, why, sizeof why), FB_CA_WRONG_NAME);
    assert_string_equal(why, "the certificate names gw1, not gw2");
    fb_ca_verifier_free(v);
}

static void test_each_refusal_is_typed(void **state)
{
    fx *f = *state;
    fb_ca_verifier *v = open_v(f, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY), true);
    char why[300];
    assert_int_equal(fb_ca_verify_chain(v, NULL, NULL, 0, NULL, NULL, why, sizeof why), FB_CA_NO_CERT);
    assert_string_equal(why, "no client certificate was presented");
    assert_int_equal(fb_ca_verify_session(v, NULL, NULL, NULL, why, sizeof why), FB_CA_NO_CERT);
    assert_int_equal(decide(v, f, "alien", NULL, NULL, why, sizeof why), FB_CA_OTHER_CA);
    assert_string_equal(why, "the certificate is not signed by this organisation's CA");
    assert_int_equal(decide(v, f, "old", NULL, NULL, why, sizeof why), FB_CA_EXPIRED);
    assert_string_equal(why, "the certificate has expired");
    assert_int_equal(decide(v, f, "future", NULL, NULL, why, sizeof why), FB_CA_NOT_YET_VALID);
    assert_string_equal(why, "the certificate is not valid yet");
    assert_int_equal(decide(v, f, "node1", NULL, NULL, why, sizeof why), FB_CA_WRONG_ROLE);
    assert_string_equal(why, "a node certificate (node1) may not call this service");
    unsigned char junk[64];
    memset(junk, 0x30, sizeof junk);
    const void *der[1] = {junk};
    size_t len[1] = {sizeof junk};
    assert_int_equal(fb_ca_verify_chain(v, der, len, 1, NULL, NULL, why, sizeof why), FB_CA_BAD_CERT);
    assert_string_equal(why, "the certificate cannot be parsed");
    fb_ca_verifier_free(v);
    /* A node's verifier takes the node and refuses the gateway. */
    v = open_v(f, FB_CA_ROLE_BIT(FB_CA_ROLE_NODE), false);
    assert_int_equal(decide(v, f, "node1", "node1", NULL, why, sizeof why), FB_CA_OK);
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_WRONG_ROLE);
    fb_ca_verifier_free(v);
    assert_string_equal(fb_ca_verdict_name(FB_CA_REVOKED), "revoked");
    assert_string_equal(fb_ca_verdict_name(FB_CA_NOT_YET_VALID), "not_yet_valid");
}

static void test_revocation_is_seen_without_reopening(void **state)
{
    fx *f = *state;
    issue_ok(f, f->ca, FB_CA_ROLE_GATEWAY, "doomed", 10, 0);
    fb_ca_verifier *v = open_v(f, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY), true);
    fb_ca_peer peer;
    char why[300];
    assert_int_equal(decide(v, f, "doomed", NULL, &peer, why, sizeof why), FB_CA_OK);
    fb_err err = {{0}};
    size_t n = 0;
    assert_int_equal(fb_ca_revoke(f->ca, NULL, "doomed", 30, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(decide(v, f, "doomed", NULL, NULL, why, sizeof why), FB_CA_REVOKED);
    char want[200];
    snprintf(want, sizeof want, "the certificate (serial %s) is revoked", peer.serial);
    assert_string_equal(why, want);
    /* The others are untouched by the new CRL. */
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_OK);
    /* Revoking again revokes nothing new; an unknown serial is typed. */
    assert_int_equal(fb_ca_revoke(f->ca, peer.serial, NULL, 30, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(fb_ca_revoke(f->ca, "abcdef", NULL, 30, &n, &err), -FB_CA_ENOTFOUND);
    fb_ca_verifier_free(v);
}

static void put_file(const char *path, const char *text)
{
    FILE *o = fopen(path, "w");
    assert_non_null(o);
    fputs(text, o);
    fclose(o);
}

static void test_a_damaged_crl_fails_closed(void **state)
{
    fx *f = *state;
    fb_ca_verifier *v = open_v(f, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY), true);
    char why[300], crl[160], other_crl[160], good[8192];
    snprintf(crl, sizeof crl, "%s/crl.pem", f->ca);
    snprintf(other_crl, sizeof other_crl, "%s/crl.pem", f->other);
    fb_err err = {{0}};
    assert_int_equal(fb_read_file(crl, good, sizeof good, &err), 0);
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_OK);

    put_file(crl, "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n");
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_REVOKED);
    assert_string_equal(why, "the CRL cannot be parsed: every peer is refused until it is fixed");

    char foreign[8192];
    assert_int_equal(fb_read_file(other_crl, foreign, sizeof foreign, &err), 0);
    put_file(crl, foreign);
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_REVOKED);
    assert_string_equal(why, "the CRL is not signed by the CA: every peer is refused until it is fixed");

    assert_int_equal(unlink(crl), 0);
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_REVOKED);
    assert_true(strncmp(why, "the CRL cannot be read (cannot read ", 36) == 0);

    put_file(crl, good);
    assert_int_equal(decide(v, f, "gw1", NULL, NULL, why, sizeof why), FB_CA_OK);
    fb_ca_verifier_free(v);
}

static void test_ca_refuses_to_replace_and_checks_input(void **state)
{
    fx *f = *state;
    fb_err err = {{0}};
    assert_int_equal(fb_ca_init(f->ca, "acme", 30, &err), -FB_CA_EEXIST);
    fb_ca_issue_req req = {.role = FB_CA_ROLE_GATEWAY, .name = "gw1", .days = 1};
    assert_int_equal(fb_ca_issue(f->ca, &req, P(f, "gw1"), NULL, 0, &err), -FB_CA_EEXIST);
    req.name = "bad,name";
    assert_int_equal(fb_ca_issue(f->ca, &req, P(f, "bad"), NULL, 0, &err), -FB_CA_EINVAL);
    req.name = "fine";
    req.days = 0;
    assert_int_equal(fb_ca_issue(f->ca, &req, P(f, "fine"), NULL, 0, &err), -FB_CA_EINVAL);
    assert_int_equal(access(P(f, "fine.key"), F_OK), -1);
    fb_ca_verifier *v = NULL;
    char gw_crt[160];
    snprintf(gw_crt, sizeof gw_crt, "%s/gw1.crt", f->tmp);
    assert_int_equal(fb_ca_verifier_open(gw_crt, NULL, 1, &v, &err), -FB_CA_EINVAL);
    assert_null(v);
}

static void test_roles_and_names(void **state)
{
    (void)state;
    unsigned set = 0;
    char why[128];
    assert_int_equal(fb_ca_roles_parse("gateway, node", &set, why, sizeof why), 0);
    assert_int_equal(set, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY) | FB_CA_ROLE_BIT(FB_CA_ROLE_NODE));
    assert_int_equal(fb_ca_roles_parse("node", &set, why, sizeof why), 0);
    assert_int_equal(set, FB_CA_ROLE_BIT(FB_CA_ROLE_NODE));
    assert_int_equal(fb_ca_roles_parse("gateway,admin", &set, why, sizeof why), -1);
    assert_string_equal(why, "unknown role \"admin\" (roles are node and gateway)");
    assert_int_equal(fb_ca_roles_parse(" , ", &set, why, sizeof why), -1);
    assert_true(fb_ca_name_valid("node-1.eu_west"));
    assert_false(fb_ca_name_valid(""));
    assert_false(fb_ca_name_valid("-x"));
    assert_false(fb_ca_name_valid("a/b"));
    assert_false(fb_ca_name_valid("a,OU=gateway"));
    char long_name[70];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    assert_false(fb_ca_name_valid(long_name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_good_peer_and_its_identity),
        cmocka_unit_test(test_each_refusal_is_typed),
        cmocka_unit_test(test_revocation_is_seen_without_reopening),
        cmocka_unit_test(test_a_damaged_crl_fails_closed),
        cmocka_unit_test(test_ca_refuses_to_replace_and_checks_input),
        cmocka_unit_test(test_roles_and_names),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

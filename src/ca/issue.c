/*
 * issue.c - issuing a node or gateway certificate (ca.h).
 *
 * A leaf gets a fresh P-256 key, a random 128-bit serial, OU=role and
 * CN=name, the SAN URI forgebox://ROLE/NAME (what the verifier trusts)
 * plus the DNS names and addresses asked for, keyUsage digitalSignature
 * and extended key usage serverAuth+clientAuth: the same certificate
 * serves a node's listener and its calls to a gateway.  The key file is
 * created 0600 and never replaces an existing one; the ledger line is
 * written last, after both files exist.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/internal.h"

static int add_sans(gnutls_x509_crt_t crt, const fb_ca_issue_req *req, fb_err *err)
{
    char uri[128];
    snprintf(uri, sizeof uri, CA_URI_PREFIX "%s/%s", fb_ca_role_name(req->role), req->name);
    int rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_URI, uri, (unsigned)strlen(uri), GNUTLS_FSAN_APPEND);
    if (rc < 0)
        return ca_tls_fail(err, rc, "ca issue: SAN URI");
    for (size_t i = 0; i < req->ndns; i++) {
        const char *d = req->dns[i];
        if (!d || !*d || strlen(d) > 253 || strspn(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*") != strlen(d))
            return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --dns \"%.64s\" is not a DNS name", d ? d : "");
        rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, d, (unsigned)strlen(d), GNUTLS_FSAN_APPEND);
        if (rc < 0)
            return ca_tls_fail(err, rc, "ca issue: SAN DNS");
    }
    for (size_t i = 0; i < req->nips; i++) {
        unsigned char a[16];
        unsigned len = 0;
        if (inet_pton(AF_INET, req->ips[i], a) == 1)
            len = 4;
        else if (inet_pton(AF_INET6, req->ips[i], a) == 1)
            len = 16;
        else
            return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --ip \"%.64s\" is not an IP address", req->ips[i]);
        rc = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, a, len, GNUTLS_FSAN_APPEND);
        if (rc < 0)
            return ca_tls_fail(err, rc, "ca issue: SAN IP");
    }
    return 0;
}

static int build_leaf(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const ca_authority *ca,
                      const fb_ca_issue_req *req, time_t *not_after, fb_err *err)
{
    unsigned char serial[CA_SERIAL_BYTES], kid[64];
    size_t kid_len = sizeof kid;
    time_t from = time(NULL) - 60 - (time_t)req->backdate_days * 86400 + (time_t)req->postdate_days * 86400;
    *not_after = from + 60 + (time_t)req->days * 86400;
    const char *role = fb_ca_role_name(req->role);
    int rc;
    if (ca_new_serial(serial) < 0)
        return fb_fail_code(err, -FB_CA_EIO, "ca issue: no random bytes");
    if ((rc = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
        (rc = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
        (rc = gnutls_x509_crt_set_activation_time(crt, from)) < 0 ||
        (rc = gnutls_x509_crt_set_expiration_time(crt, *not_after)) < 0 ||
        (rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATIONAL_UNIT_NAME, 0, role,
                                            (unsigned)strlen(role))) < 0 ||
        (rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, req->name,
                                            (unsigned)strlen(req->name))) < 0 ||
        (rc = gnutls_x509_crt_set_key(crt, key)) < 0 || (rc = gnutls_x509_crt_set_basic_constraints(crt, 0, -1)) < 0 ||
        (rc = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE)) < 0 ||
        (rc = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0 ||
        (rc = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0)) < 0 ||
        (rc = gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, kid, &kid_len)) < 0 ||
        (rc = gnutls_x509_crt_set_subject_key_id(crt, kid, kid_len)) < 0)
        return ca_tls_fail(err, rc, "ca issue: building the certificate");
    if (add_sans(crt, req, err) < 0)
        return -FB_CA_EINVAL;
    kid_len = sizeof kid;
    if ((rc = gnutls_x509_crt_get_subject_key_id(ca->crt, kid, &kid_len, NULL)) < 0 ||
        (rc = gnutls_x509_crt_set_authority_key_id(crt, kid, kid_len)) < 0 ||
        (rc = gnutls_x509_crt_sign2(crt, ca->crt, ca->key, GNUTLS_DIG_SHA256, 0)) < 0)
        return ca_tls_fail(err, rc, "ca issue: signing");
    return 0;
}

static int check_req(const fb_ca_issue_req *req, const char *prefix, fb_err *err)
{
    if ((unsigned)req->role >= FB_CA_ROLE_COUNT)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --role must be node or gateway");
    if (!fb_ca_name_valid(req->name))
        return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --name must be 1-64 of A-Z a-z 0-9 . _ - (not starting with . or -)");
    if (req->days < 1 || req->days > CA_MAX_DAYS || req->backdate_days > CA_MAX_DAYS ||
        req->postdate_days > CA_MAX_DAYS)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --days must be between 1 and %u", CA_MAX_DAYS);
    if (!prefix || !*prefix || strlen(prefix) > 4000)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca issue: --out PREFIX is required");
    return 0;
}

int fb_ca_issue(const char *dir, const fb_ca_issue_req *req, const char *prefix, char *serial_hex,
                size_t serial_cap, fb_err *err)
{
    int r = check_req(req, prefix, err);
    if (r < 0)
        return r;
    char crt_path[4200], key_path[4200];
    snprintf(crt_path, sizeof crt_path, "%s.crt", prefix);
    snprintf(key_path, sizeof key_path, "%s.key", prefix);
    if (access(crt_path, F_OK) == 0 || access(key_path, F_OK) == 0)
        return fb_fail_code(err, -FB_CA_EEXIST, "ca issue: %s.crt or %s.key exists already; not replacing it", prefix,
                            prefix);
    ca_authority ca;
    if ((r = ca_load(dir, &ca, err)) < 0)
        return r;
    gnutls_x509_privkey_t key = NULL;
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t pem = {0};
    time_t not_after = 0;
    r = -FB_CA_ETLS;
    if (ca_new_key(&key, err) < 0)
        goto out;
    int rc = gnutls_x509_crt_init(&crt);
    if (rc < 0) {
        ca_tls_fail(err, rc, "ca issue");
        goto out;
    }
    if ((r = build_leaf(crt, key, &ca, req, &not_after, err)) < 0)
        goto out;
    r = -FB_CA_ETLS;
    if ((rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem)) < 0) {
        ca_tls_fail(err, rc, "ca issue: exporting");
        goto out;
    }
    unsigned char serial[CA_SERIAL_BYTES + 4];
    size_t slen = sizeof serial;
    char hex[2 * sizeof serial + 1];
    if ((rc = gnutls_x509_crt_get_serial(crt, serial, &slen)) < 0) {
        ca_tls_fail(err, rc, "ca issue: serial");
        goto out;
    }
    fb_hex(serial, slen, hex);
    if ((r = ca_write_key(key_path, key, err)) < 0)
        goto out;
    r = -FB_CA_EIO;
    if (fb_create_file_once(crt_path, pem.data, pem.size, err) < 0 || chmod(crt_path, 0644) < 0)
        goto out;
    if ((r = ca_ledger_append_issued(dir, hex, req->role, req->name, (long long)not_after, err)) < 0)
        goto out;
    if (serial_hex)
        snprintf(serial_hex, serial_cap, "%s", hex);
    r = 0;
out:
    gnutls_free(pem.data);
    if (crt)
        gnutls_x509_crt_deinit(crt);
    if (key)
        gnutls_x509_privkey_deinit(key);
    ca_unload(&ca);
    return r;
}

/*
 * crl.c - revocation and the CRL (ca.h).
 *
 * Revoking appends to revoked.jsonl and re-signs the whole CRL from it:
 * the CRL is always a function of the ledger, with thisUpdate now and a
 * nextUpdate crl_days ahead (a verifier could refuse a stale CRL; ours
 * reloads it whenever the file changes).  The new crl.pem replaces the
 * old by rename(2), so a service reloading mid-write sees one or the other
 * whole.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "ca/internal.h"

static int hex_to_bytes(const char *hex, unsigned char *out, size_t cap, size_t *len)
{
    size_t n = strlen(hex);
    if (n == 0 || n % 2 || n / 2 > cap)
        return -1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (unsigned char)v;
    }
    *len = n / 2;
    return 0;
}

int fb_ca_crl_write(const char *dir, unsigned crl_days, fb_err *err)
{
    if (crl_days < 1 || crl_days > 3650)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca: the CRL's validity must be 1-3650 days");
    ca_authority ca;
    int r = ca_load(dir, &ca, err);
    if (r < 0)
        return r;
    ca_revocation *rv = NULL;
    size_t nrv = 0;
    gnutls_x509_crl_t crl = NULL;
    gnutls_datum_t pem = {0};
    if ((r = ca_ledger_revoked(dir, &rv, &nrv, err)) < 0)
        goto out;
    r = -FB_CA_ETLS;
    time_t now = time(NULL);
    int rc = gnutls_x509_crl_init(&crl);
    if (rc >= 0)
        rc = gnutls_x509_crl_set_version(crl, 2);
    if (rc >= 0)
        rc = gnutls_x509_crl_set_this_update(crl, now);
    if (rc >= 0)
        rc = gnutls_x509_crl_set_next_update(crl, now + (time_t)crl_days * 86400);
    for (size_t i = 0; rc >= 0 && i < nrv; i++) {
        unsigned char s[32];
        size_t sl;
        if (hex_to_bytes(rv[i].serial, s, sizeof s, &sl) < 0) {
            fb_fail_code(err, -FB_CA_EIO, "ca: revoked.jsonl holds a bad serial \"%.40s\"", rv[i].serial);
            goto out;
        }
        rc = gnutls_x509_crl_set_crt_serial(crl, s, sl, (time_t)rv[i].when);
    }
    unsigned char num[8];
    uint64_t n = (uint64_t)now;
    for (int i = 7; i >= 0; i--, n >>= 8)
        num[i] = (unsigned char)n;
    if (rc >= 0)
        rc = gnutls_x509_crl_set_number(crl, num, sizeof num);
    unsigned char kid[64];
    size_t kid_len = sizeof kid;
    if (rc >= 0)
        rc = gnutls_x509_crt_get_subject_key_id(ca.crt, kid, &kid_len, NULL);
    if (rc >= 0)
        rc = gnutls_x509_crl_set_authority_key_id(crl, kid, kid_len);
    if (rc >= 0)
        rc = gnutls_x509_crl_sign2(crl, ca.crt, ca.key, GNUTLS_DIG_SHA256, 0);
    if (rc >= 0)
        rc = gnutls_x509_crl_export2(crl, GNUTLS_X509_FMT_PEM, &pem);
    if (rc < 0) {
        ca_tls_fail(err, rc, "ca: signing the CRL");
        goto out;
    }
    char path[4096];
    if ((r = ca_path(dir, "crl.pem", path, sizeof path, err)) < 0)
        goto out;
    r = ca_replace_file(path, pem.data, pem.size, 0644, err);
out:
    gnutls_free(pem.data);
    if (crl)
        gnutls_x509_crl_deinit(crl);
    free(rv);
    ca_unload(&ca);
    return r;
}

int fb_ca_revoke(const char *dir, const char *serial, const char *name, unsigned crl_days, size_t *count,
                 fb_err *err)
{
    fb_ca_record *recs = NULL;
    size_t n = 0, hit = 0, fresh = 0;
    int r = fb_ca_list(dir, &recs, &n, err);
    if (r < 0)
        return r;
    long long now = (long long)time(NULL);
    for (size_t i = 0; i < n && r == 0; i++) {
        bool match = serial ? strcasecmp(recs[i].serial, serial) == 0 : strcmp(recs[i].name, name) == 0;
        if (!match)
            continue;
        hit++;
        if (recs[i].revoked)
            continue;
        r = ca_ledger_append_revoked(dir, recs[i].serial, now, err);
        fresh++;
    }
    free(recs);
    if (r < 0)
        return r;
    if (!hit)
        return fb_fail_code(err, -FB_CA_ENOTFOUND, "ca revoke: no certificate with %s \"%.64s\" was issued by this CA",
                            serial ? "serial" : "name", serial ? serial : name);
    if (count)
        *count = fresh;
    return fb_ca_crl_write(dir, crl_days, err);
}

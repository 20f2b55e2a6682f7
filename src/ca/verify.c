/*
 * verify.c - deciding a peer's certificate (ca.h), for every service that
 * takes mutual TLS: the gateway today, nodes and their gateway calls next.
 *
 * The chain is checked against a trust list holding only the organisation
 * CA (GnuTLS checks the signature and the validity period); revocation is
 * checked against the CRL, which is verified against the CA when loaded
 * and re-read when its file changes (mtime, size or inode: `ca revoke`
 * renames a new file into place).  A CRL that is missing after having
 * been configured, unparsable or not signed by the CA makes every peer a
 * refusal: a revocation must never be lost to a damaged file.
 *
 * The identity is the one SAN URI forgebox://ROLE/NAME; a certificate
 * with none, or with two, is refused.  Each refusal is typed
 * (fb_ca_verdict) with a line for the audit log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ca/internal.h"

struct fb_ca_verifier {
    pthread_mutex_t mu;
    unsigned roles;
    char *crl_path;                 /* NULL: no CRL */
    gnutls_x509_crt_t ca;
    gnutls_x509_trust_list_t tl;
    gnutls_x509_crl_t crl;          /* the loaded CRL (NULL: none or bad) */
    bool crl_bad;
    char crl_why[200];
    struct timespec crl_mtime;
    off_t crl_size;
    ino_t crl_ino;
    bool crl_seen;                  /* a stat has been taken */
};

static const char *const verdict_names[] = {
    "ok", "no_certificate", "other_ca", "expired", "not_yet_valid", "revoked", "wrong_role", "wrong_name",
    "bad_certificate",
};

const char *fb_ca_verdict_name(fb_ca_verdict v)
{
    return (unsigned)v < sizeof verdict_names / sizeof verdict_names[0] ? verdict_names[v] : "?";
}

int fb_ca_verifier_open(const char *ca_path, const char *crl_path, unsigned role_set, fb_ca_verifier **out,
                        fb_err *err)
{
    fb_ca_verifier *v = calloc(1, sizeof *v);
    if (!v)
        return fb_fail_code(err, -FB_CA_EIO, "out of memory");
    pthread_mutex_init(&v->mu, NULL);
    v->roles = role_set;
    gnutls_datum_t d = {0};
    int r = ca_read_datum(ca_path, &d, err);
    if (r < 0)
        goto fail;
    r = -FB_CA_ETLS;
    gnutls_x509_crt_t copy = NULL;
    int rc = gnutls_x509_crt_init(&v->ca);
    if (rc >= 0)
        rc = gnutls_x509_crt_import(v->ca, &d, GNUTLS_X509_FMT_PEM);
    if (rc >= 0)
        rc = gnutls_x509_crt_init(&copy);
    if (rc >= 0)
        rc = gnutls_x509_crt_import(copy, &d, GNUTLS_X509_FMT_PEM);
    if (rc >= 0)
        rc = gnutls_x509_trust_list_init(&v->tl, 0);
    if (rc >= 0)
        rc = gnutls_x509_trust_list_add_cas(v->tl, &copy, 1, 0); /* the list owns copy now */
    free(d.data);
    if (rc < 0) {
        if (copy && !v->tl)
            gnutls_x509_crt_deinit(copy);
        ca_tls_fail(err, rc, "tls: the client CA certificate");
        goto fail;
    }
    if (gnutls_x509_crt_get_ca_status(v->ca, NULL) != 1) {
        r = fb_fail_code(err, -FB_CA_EINVAL, "tls: %s is not a CA certificate", ca_path);
        goto fail;
    }
    if (crl_path && !(v->crl_path = strdup(crl_path))) {
        r = fb_fail_code(err, -FB_CA_EIO, "out of memory");
        goto fail;
    }
    *out = v;
    return 0;
fail:
    fb_ca_verifier_free(v);
    return r;
}

void fb_ca_verifier_free(fb_ca_verifier *v)
{
    if (!v)
        return;
    if (v->tl)
        gnutls_x509_trust_list_deinit(v->tl, 1);
    if (v->ca)
        gnutls_x509_crt_deinit(v->ca);
    if (v->crl)
        gnutls_x509_crl_deinit(v->crl);
    pthread_mutex_destroy(&v->mu);
    free(v->crl_path);
    free(v);
}

/* Loads the CRL file into v (under v->mu); on any failure v->crl_bad. */
static void crl_load(fb_ca_verifier *v)
{
    if (v->crl)
        gnutls_x509_crl_deinit(v->crl);
    v->crl = NULL;
    v->crl_bad = true;
    gnutls_datum_t d = {0};
    fb_err e = {{0}};
    if (ca_read_datum(v->crl_path, &d, &e) < 0) {
        snprintf(v->crl_why, sizeof v->crl_why, "the CRL cannot be read (%.150s)", e.msg);
        return;
    }
    gnutls_x509_crl_t crl = NULL;
    unsigned status = 1;
    int rc = gnutls_x509_crl_init(&crl);
    if (rc >= 0)
        rc = gnutls_x509_crl_import(crl, &d, GNUTLS_X509_FMT_PEM);
    if (rc >= 0)
        rc = gnutls_x509_crl_verify(crl, &v->ca, 1, 0, &status);
    free(d.data);
    if (rc < 0 || status != 0) {
        snprintf(v->crl_why, sizeof v->crl_why, "the CRL %s", rc < 0 ? "cannot be parsed" : "is not signed by the CA");
        if (crl)
            gnutls_x509_crl_deinit(crl);
        return;
    }
    v->crl = crl;
    v->crl_bad = false;
}

/* Re-reads the CRL when its file changed since the last look. */
static void crl_refresh(fb_ca_verifier *v)
{
    if (!v->crl_path)
        return;
    struct stat st;
    if (stat(v->crl_path, &st) < 0) {
        memset(&st, 0, sizeof st);
        st.st_size = -1;
    }
    if (v->crl_seen && st.st_mtim.tv_sec == v->crl_mtime.tv_sec && st.st_mtim.tv_nsec == v->crl_mtime.tv_nsec &&
        st.st_size == v->crl_size && st.st_ino == v->crl_ino)
        return;
    v->crl_seen = true;
    v->crl_mtime = st.st_mtim;
    v->crl_size = st.st_size;
    v->crl_ino = st.st_ino;
    crl_load(v);
}

/* The forgebox:// identity of crt; FB_CA_OK or FB_CA_BAD_CERT. */
static fb_ca_verdict identity(gnutls_x509_crt_t crt, fb_ca_peer *p, char *reason, size_t cap)
{
    int found = 0;
    for (unsigned seq = 0; seq < 64; seq++) {
        char buf[256];
        size_t size = sizeof buf - 1;
        int type = gnutls_x509_crt_get_subject_alt_name(crt, seq, buf, &size, NULL);
        if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (type != GNUTLS_SAN_URI)
            continue;
        buf[size] = '\0';
        if (strncmp(buf, CA_URI_PREFIX, strlen(CA_URI_PREFIX)) != 0)
            continue;
        const char *rest = buf + strlen(CA_URI_PREFIX);
        const char *slash = strchr(rest, '/');
        char role[16];
        if (!slash || (size_t)(slash - rest) >= sizeof role)
            break;
        snprintf(role, sizeof role, "%.*s", (int)(slash - rest), rest);
        int r = fb_ca_role_from_name(role);
        if (r < 0 || !fb_ca_name_valid(slash + 1) || found++) {
            found = 2;
            break;
        }
        p->role = (fb_ca_role)r;
        snprintf(p->name, sizeof p->name, "%s", slash + 1);
    }
    if (found != 1) {
        snprintf(reason, cap, "the certificate carries %s forgebox:// identity",
                 found ? "more than one or a malformed" : "no");
        return FB_CA_BAD_CERT;
    }
    return FB_CA_OK;
}

static fb_ca_verdict chain_status(fb_ca_verifier *v, gnutls_x509_crt_t *certs, unsigned n, char *reason, size_t cap)
{
    unsigned status = 0;
    int rc = gnutls_x509_trust_list_verify_crt2(v->tl, certs, n, NULL, 0, 0, &status, NULL);
    if (rc < 0) {
        snprintf(reason, cap, "the chain cannot be verified: %s", gnutls_strerror(rc));
        return FB_CA_OTHER_CA;
    }
    if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNATURE_FAILURE | GNUTLS_CERT_SIGNER_NOT_CA |
                  GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE)) {
        snprintf(reason, cap, "the certificate is not signed by this organisation's CA");
        return FB_CA_OTHER_CA;
    }
    if (status & GNUTLS_CERT_EXPIRED) {
        snprintf(reason, cap, "the certificate has expired");
        return FB_CA_EXPIRED;
    }
    if (status & GNUTLS_CERT_NOT_ACTIVATED) {
        snprintf(reason, cap, "the certificate is not valid yet");
        return FB_CA_NOT_YET_VALID;
    }
    if (status) {
        gnutls_datum_t out = {0};
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
        snprintf(reason, cap, "the certificate is refused: %s", out.data ? (char *)out.data : "invalid");
        gnutls_free(out.data);
        return FB_CA_BAD_CERT;
    }
    return FB_CA_OK;
}

static fb_ca_verdict decide(fb_ca_verifier *v, gnutls_x509_crt_t *certs, unsigned n, const char *want_name,
                            fb_ca_peer *p, char *reason, size_t cap)
{
    unsigned char s[40];
    size_t sl = sizeof s;
    if (gnutls_x509_crt_get_serial(certs[0], s, &sl) >= 0 && sl <= 20)
        fb_hex(s, sl, p->serial);
    fb_ca_verdict r = chain_status(v, certs, n, reason, cap);
    if (r != FB_CA_OK)
        return r;
    crl_refresh(v);
    if (v->crl_path && v->crl_bad) {
        snprintf(reason, cap, "%s: every peer is refused until it is fixed", v->crl_why);
        return FB_CA_REVOKED;
    }
    if (v->crl && gnutls_x509_crt_check_revocation(certs[0], &v->crl, 1) != 0) {
        snprintf(reason, cap, "the certificate (serial %s) is revoked", p->serial);
        return FB_CA_REVOKED;
    }
    if ((r = identity(certs[0], p, reason, cap)) != FB_CA_OK)
        return r;
    if (!(v->roles & FB_CA_ROLE_BIT(p->role))) {
        snprintf(reason, cap, "a %s certificate (%s) may not call this service", fb_ca_role_name(p->role), p->name);
        return FB_CA_WRONG_ROLE;
    }
    if (want_name && strcmp(want_name, p->name) != 0) {
        snprintf(reason, cap, "the certificate names %s, not %.64s", p->name, want_name);
        return FB_CA_WRONG_NAME;
    }
    snprintf(reason, cap, "%s %s (serial %s)", fb_ca_role_name(p->role), p->name, p->serial);
    return FB_CA_OK;
}

#define MAX_CHAIN 8

fb_ca_verdict fb_ca_verify_chain(fb_ca_verifier *v, const void *const *der, const size_t *der_len, size_t n,
                                 const char *want_name, fb_ca_peer *peer, char *reason, size_t reason_cap)
{
    fb_ca_peer scratch;
    fb_ca_peer *p = peer ? peer : &scratch;
    memset(p, 0, sizeof *p);
    if (n == 0) {
        snprintf(reason, reason_cap, "no client certificate was presented");
        return FB_CA_NO_CERT;
    }
    if (n > MAX_CHAIN)
        n = MAX_CHAIN;
    gnutls_x509_crt_t certs[MAX_CHAIN] = {0};
    fb_ca_verdict r = FB_CA_OK;
    for (size_t i = 0; i < n && r == FB_CA_OK; i++) {
        gnutls_datum_t d = {(unsigned char *)der[i], (unsigned)der_len[i]};
        if (gnutls_x509_crt_init(&certs[i]) < 0 || gnutls_x509_crt_import(certs[i], &d, GNUTLS_X509_FMT_DER) < 0) {
            snprintf(reason, reason_cap, "the certificate cannot be parsed");
            r = FB_CA_BAD_CERT;
        }
    }
    if (r == FB_CA_OK) {
        pthread_mutex_lock(&v->mu);
        r = decide(v, certs, (unsigned)n, want_name, p, reason, reason_cap);
        pthread_mutex_unlock(&v->mu);
    }
    for (size_t i = 0; i < n; i++)
        if (certs[i])
            gnutls_x509_crt_deinit(certs[i]);
    return r;
}

fb_ca_verdict fb_ca_verify_session(fb_ca_verifier *v, void *gnutls_session, const char *want_name,
                                   fb_ca_peer *peer, char *reason, size_t reason_cap)
{
    unsigned n = 0;
    const gnutls_datum_t *list =
        gnutls_session ? gnutls_certificate_get_peers((gnutls_session_t)gnutls_session, &n) : NULL;
    if (!list)
        n = 0;
    const void *der[MAX_CHAIN];
    size_t len[MAX_CHAIN];
    if (n > MAX_CHAIN)
        n = MAX_CHAIN;
    for (unsigned i = 0; i < n; i++) {
        der[i] = list[i].data;
        len[i] = list[i].size;
    }
    return fb_ca_verify_chain(v, der, len, n, want_name, peer, reason, reason_cap);
}

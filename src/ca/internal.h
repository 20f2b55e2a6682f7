/*
 * internal.h - private to src/ca: the CA directory's files and the GnuTLS
 * helpers that authority.c, issue.c, crl.c and ledger.c share.
 */
#ifndef FB_CA_INTERNAL_H
#define FB_CA_INTERNAL_H

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "ca/ca.h"

#define CA_SERIAL_BYTES 16
#define CA_MAX_DAYS 36500u
#define CA_URI_PREFIX "forgebox://"

typedef struct ca_authority {
    gnutls_x509_crt_t crt;
    gnutls_x509_privkey_t key;
} ca_authority;

/* DIR/name into out; -1 (EINVAL) when it does not fit. */
int ca_path(const char *dir, const char *name, char *out, size_t cap, fb_err *err);
/* Loads DIR's ca.crt and ca.key (FB_CA_ENOCA when absent). */
int ca_load(const char *dir, ca_authority *ca, fb_err *err);
void ca_unload(ca_authority *ca);
/* A whole small file (<= 1 MiB) as a datum (data malloc'd, NUL-terminated). */
int ca_read_datum(const char *path, gnutls_datum_t *d, fb_err *err);
/* Writes data to path under a temporary name then renames it over path. */
int ca_replace_file(const char *path, const void *data, size_t len, mode_t mode, fb_err *err);
/* Fills a fresh positive serial. */
int ca_new_serial(unsigned char serial[CA_SERIAL_BYTES]);
/* A key pair for a CA or a leaf (ECDSA P-256). */
int ca_new_key(gnutls_x509_privkey_t *key, fb_err *err);
/* Exports a key as PKCS#8 PEM and creates path (0600) with it, refusing to
 * replace a file that exists. */
int ca_write_key(const char *path, gnutls_x509_privkey_t key, fb_err *err);
/* A GnuTLS failure as a typed error. */
int ca_tls_fail(fb_err *err, int rc, const char *what);

/* ---- ledger.c: issued.jsonl and revoked.jsonl -------------------------------- */

int ca_ledger_append_issued(const char *dir, const char *serial, fb_ca_role role, const char *name,
                            long long not_after, fb_err *err);
int ca_ledger_append_revoked(const char *dir, const char *serial, long long when, fb_err *err);
/* The revoked serials (hex) with their times; *serials malloc'd. */
typedef struct ca_revocation {
    char serial[48];
    long long when;
} ca_revocation;
int ca_ledger_revoked(const char *dir, ca_revocation **out, size_t *n, fb_err *err);

#endif

/*
 * ca.h - the organisation's certificate authority and mutual TLS: the whole
 * public face of src/ca.
 *
 * Every ForgeBox service proves who it is with a certificate from one
 * organisation CA (a directory an operator keeps offline or on one admin
 * host).  A certificate carries a role (node or gateway) and a name, both
 * in the subject (OU=role, CN=name) and, authoritative, in a SAN URI
 * "forgebox://ROLE/NAME"; the verifier reads only the URI, so a name with
 * a comma or an odd DN escape cannot pass for another.
 *
 * The CA directory:
 *   ca.crt        the CA certificate (ECDSA P-256, CA:TRUE, pathlen 0)
 *   ca.key        its private key (0600; never leaves the directory)
 *   issued.jsonl  one line per issued certificate {serial, role, name, not_after}
 *   revoked.jsonl one line per revocation {serial, revoked_at}
 *   crl.pem       the CRL, re-signed on every revocation (nextUpdate set)
 *
 * GnuTLS is the library (libmicrohttpd and libcurl-gnutls already use it),
 * so one TLS stack serves both sides of every connection.
 */
#ifndef FB_CA_H
#define FB_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "common/util.h"

/* ---- roles -------------------------------------------------------------- */

typedef enum fb_ca_role {
    FB_CA_ROLE_NODE = 0,
    FB_CA_ROLE_GATEWAY = 1,
} fb_ca_role;
#define FB_CA_ROLE_COUNT 2
/* A set of roles: bit (1u << role). */
#define FB_CA_ROLE_BIT(r) (1u << (unsigned)(r))

/* "node" | "gateway" -> role; -1 for anything else. */
int fb_ca_role_from_name(const char *name);
const char *fb_ca_role_name(fb_ca_role role);
/* "gateway,node" or "gateway node" -> a role set; -1 (and why) on an
 * unknown or empty list. */
int fb_ca_roles_parse(const char *list, unsigned *set, char *why, size_t why_cap);
/* A certificate name: 1-64 of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool fb_ca_name_valid(const char *name);

/* ---- the authority (authority.c, issue.c, crl.c, ledger.c) ----------------- */

/* Every fb_ca_* function that can fail returns 0, or minus an fb_ca_code
 * with the message in err. */
typedef enum fb_ca_code {
    FB_CA_EOK = 0,
    FB_CA_EEXIST,   /* ca init: a CA is already in the directory */
    FB_CA_ENOCA,    /* no CA (or no key) in the directory */
    FB_CA_EINVAL,   /* a bad argument (role, name, address, days) */
    FB_CA_ENOTFOUND,/* revoke: no such serial or name */
    FB_CA_EIO,      /* a file could not be read or written */
    FB_CA_ETLS,     /* GnuTLS refused (message says what) */
} fb_ca_code;

/* Creates DIR (0700) and a new CA in it: "O=org, CN=org ForgeBox CA", valid
 * for days days.  FB_CA_EEXIST when DIR already holds ca.crt or ca.key. */
int fb_ca_init(const char *dir, const char *org, unsigned days, fb_err *err);

typedef struct fb_ca_issue_req {
    fb_ca_role role;
    const char *name;
    unsigned days;            /* validity from not_before */
    unsigned backdate_days;   /* not_before = now - this (tests: expired certificates) */
    unsigned postdate_days;   /* not_before = now + this (tests: not yet valid) */
    const char *const *dns;   /* SAN DNS names, ndns of them */
    size_t ndns;
    const char *const *ips;   /* SAN IP addresses (v4 or v6 text), nips of them */
    size_t nips;
} fb_ca_issue_req;

/* Issues a certificate signed by DIR's CA and writes PREFIX.crt (0644)
 * and PREFIX.key (0600, never replacing an existing file), then records
 * it in issued.jsonl.  serial_hex (>= 41 bytes, may be NULL) gets the
 * serial. */
int fb_ca_issue(const char *dir, const fb_ca_issue_req *req, const char *prefix, char *serial_hex,
                size_t serial_cap, fb_err *err);

/* Revokes by serial (hex, as `ca list` shows) or, serial NULL, every
 * unrevoked certificate named name; then re-signs DIR/crl.pem, valid for
 * crl_days.  *count: how many were newly revoked. */
int fb_ca_revoke(const char *dir, const char *serial, const char *name, unsigned crl_days, size_t *count,
                 fb_err *err);
/* Re-signs DIR/crl.pem from revoked.jsonl (also what init writes: an
 * empty CRL, so services have a file to load from the start). */
int fb_ca_crl_write(const char *dir, unsigned crl_days, fb_err *err);

typedef struct fb_ca_record {
    char serial[48];
    fb_ca_role role;
    char name[72];
    long long not_after;  /* unix seconds */
    bool revoked;
} fb_ca_record;

/* Every certificate DIR's CA issued, oldest first (*out malloc'd). */
int fb_ca_list(const char *dir, fb_ca_record **out, size_t *n, fb_err *err);

/* ---- verifying peers (verify.c) -------------------------------------------- */

typedef enum fb_ca_verdict {
    FB_CA_OK = 0,
    FB_CA_NO_CERT,       /* the peer sent no certificate */
    FB_CA_OTHER_CA,      /* not signed by our CA (or not a valid chain) */
    FB_CA_EXPIRED,
    FB_CA_NOT_YET_VALID,
    FB_CA_REVOKED,
    FB_CA_WRONG_ROLE,
    FB_CA_WRONG_NAME,
    FB_CA_BAD_CERT,      /* unparsable, no forgebox:// identity, wrong key usage */
} fb_ca_verdict;

/* "ok", "no_certificate", "other_ca", "expired", "not_yet_valid",
 * "revoked", "wrong_role", "wrong_name", "bad_certificate". */
const char *fb_ca_verdict_name(fb_ca_verdict v);

typedef struct fb_ca_verifier fb_ca_verifier;

/* A verifier for peers of the roles in role_set, signed by the CA in
 * ca_path (PEM), checked against the CRL in crl_path (NULL: none).  The
 * CRL is re-read whenever its mtime or size changes, so a revocation
 * takes effect without a restart; a CRL that cannot be read or whose
 * signature is not the CA's refuses every peer (fail closed) until fixed. */
int fb_ca_verifier_open(const char *ca_path, const char *crl_path, unsigned role_set, fb_ca_verifier **out,
                        fb_err *err);
void fb_ca_verifier_free(fb_ca_verifier *v);

typedef struct fb_ca_peer {
    fb_ca_role role;
    char name[72];
    char serial[48];
} fb_ca_peer;

/* Decides a peer's chain (DER certificates, leaf first).  want_name
 * non-NULL: the peer must carry exactly that name.  peer (may be NULL) is
 * filled when the identity could be read; reason gets a line for the
 * audit log. Safe from many threads. */
fb_ca_verdict fb_ca_verify_chain(fb_ca_verifier *v, const void *const *der, const size_t *der_len, size_t n,
                                 const char *want_name, fb_ca_peer *peer, char *reason, size_t reason_cap);
/* The same for a GnuTLS session (gnutls_session_t, passed as void * so
 * that this header does not drag GnuTLS into every includer). */
fb_ca_verdict fb_ca_verify_session(fb_ca_verifier *v, void *gnutls_session, const char *want_name,
                                   fb_ca_peer *peer, char *reason, size_t reason_cap);

/* The GnuTLS priority string of every mutual-TLS endpoint: TLS 1.3 only. */
#define FB_CA_TLS_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3"

/* ---- clients (client.c) ------------------------------------------------------ */

typedef struct fb_ca_client {
    const char *cert;   /* PEM paths; NULL: unset */
    const char *key;
    const char *ca;
    const char *crl;
} fb_ca_client;

/* Reads FORGEBOX_CLIENT_CERT, _KEY, _CA and _CRL.  0 with every field
 * NULL when none is set; -1 when cert and key are not set together. */
int fb_ca_client_from_env(fb_ca_client *c, fb_err *err);
/* Whether any field is set. */
bool fb_ca_client_set(const fb_ca_client *c);
/* Sets a libcurl easy handle (CURL *, as void *) to present cert/key,
 * trust only ca (when set), check crl, and speak TLS 1.3 only. */
int fb_ca_client_apply(const fb_ca_client *c, void *curl, fb_err *err);

#endif

/*
 * verdicts.h - a short memory of certificate chains already accepted, so
 * that the kept-alive connections between gateways and nodes do not pay a
 * full chain verification (import, signatures, CRL lookup) on every
 * request, once on each side: ~0.3 ms a side on the development host, a
 * quarter of what a remote exec cost over a local one.
 *
 * Only acceptances are remembered, never refusals.  An entry is the
 * BLAKE2b hash of the chain exactly as presented (DER, leaf first) and of
 * the name asked for, and it serves only while
 *   - the CA file and the CRL file are as they were (stat: device, inode,
 *     size, mtime) BEFORE the verification that made it: a `ca revoke`
 *     (a new CRL file) or a new CA empties the memory for the next
 *     request, exactly as the verifier itself re-reads them on change;
 *   - the leaf has not expired (its notAfter, read when remembered);
 *   - it is younger than NV_TTL_S.
 * A verdict is a function of these inputs and the clock alone, so the
 * memory answers what a fresh verification would.  A file that cannot be
 * stat'ed disables it (every request is verified).
 */
#ifndef FB_NODE_VERDICTS_H
#define FB_NODE_VERDICTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ca/ca.h"

#define NV_TTL_S 60
#define NV_ENTRIES 32

typedef struct nv_cache nv_cache;

/* The inputs of one verification, taken before it (nv_check) and
 * remembered with its acceptance (nv_put). */
typedef struct nv_pending {
    bool usable;                    /* files stat'ed, chain hashed */
    uint8_t key[32];
    struct nv_file {
        bool present;
        dev_t dev;
        ino_t ino;
        off_t size;
        int64_t mtime_s, mtime_ns;
    } ca, crl;
    const void *leaf;               /* the session's leaf (valid until the call returns) */
    size_t leaf_len;
} nv_pending;

/* ca_path: the CA file; crl_path: the CRL file or NULL.  NULL: out of
 * memory (callers then verify every request). */
nv_cache *nv_cache_new(const char *ca_path, const char *crl_path);
void nv_cache_free(nv_cache *c);

/* true: gnutls_session's chain was accepted for want_name (NULL: any
 * name) under the same files, and *peer is what that verification read.
 * false: verify it; *p carries what nv_put needs. */
bool nv_check(nv_cache *c, void *gnutls_session, const char *want_name, fb_ca_peer *peer, nv_pending *p);

/* Remembers an acceptance (call only for FB_CA_OK, with the p that
 * nv_check filled for the same session and name). */
void nv_put(nv_cache *c, const nv_pending *p, const fb_ca_peer *peer);

#endif

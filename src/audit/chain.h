/*
 * chain.h - private to src/audit: the chain's cryptography and key, shared
 * by append (chain.c), verification (verify.c) and reading (read.c).
 *
 * An entry's hash and the head's MAC are keyed BLAKE2b-256 over the
 * canonical encodings documented in audit.h.  The key lives in
 * STATE_DIR/audit.key and is wiped from memory after every use
 * (cleanup_key).
 */
#ifndef FB_AUDIT_CHAIN_H
#define FB_AUDIT_CHAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "audit/audit.h"
#include "store/audit_log.h"

#define HASH_HEX FB_AUDIT_HASH_HEX
/* The hashed fields: every stored column but the entry's own hash. */
#define NFIELDS FB_AUDIT_COL_HASH

typedef struct audit_key {
    uint8_t b[FB_AUDIT_KEY_BYTES];
} audit_key;

void fb_audit_key_wipep(audit_key *k);
#define cleanup_key __attribute__((cleanup(fb_audit_key_wipep)))

extern const char fb_audit_zero_hash[HASH_HEX + 1];
extern const char *const fb_audit_field_names[FB_AUDIT_NCOLS];

/* STATE_DIR/audit.key, malloc'd (NULL: no memory). */
char *fb_audit_key_path(fb_store *st);
/* Reads the key; *missing tells "no such file" apart from other failures. */
int fb_audit_key_read(const char *path, audit_key *k, bool *missing, fb_err *err);
/* Creates a new random key unless one exists (never replaces one). */
int fb_audit_key_create(const char *path, fb_err *err);

/* The hash of entry seq over its NFIELDS fields, as lower-case hex. */
void fb_audit_entry_hash(const audit_key *k, int64_t seq, const fb_audit_text f[NFIELDS], char out[HASH_HEX + 1]);
void fb_audit_head_mac(const audit_key *k, int64_t seq, const char *hash, size_t hash_len, char out[HASH_HEX + 1]);
/* Constant-time comparison of stored hex text with a computed hash. */
bool fb_audit_hex_equal(const char *stored, size_t n, const char *computed);
bool fb_audit_head_authentic(const audit_key *k, const fb_audit_head *h);

/* A new NUL-terminated copy of in[0..n) that is valid UTF-8 (each invalid
 * byte becomes U+FFFD) and at most cap bytes long: a longer text is cut at
 * a character boundary and ends with FB_AUDIT_TRUNCATED.  *out_len (if not
 * NULL) is its length, which counts any NUL bytes inside.  NULL: no memory. */
char *fb_audit_utf8_clean(const char *in, size_t n, size_t cap, size_t *out_len);
bool fb_audit_valid_outcome(const char *s);

#endif

/*
 * internal.h - private to src/auth: what secrets.c, accounts.c and keys.c
 * share: the shapes of names and ids, the pepper and key digests, and the
 * translation of the store's typed errors into auth's.
 */
#ifndef FB_AUTH_INTERNAL_H
#define FB_AUTH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"

#define KEY_PREFIX "fbk_"
#define KEY_PREFIX_LEN 4
#define KEY_ID_PREFIX "key_"
#define KEY_ID_BYTES 6 /* 12 hex digits */
#define KEY_ID_HEX (2 * KEY_ID_BYTES)
#define KEY_SECRET_BYTES 32
#define KEY_SECRET_B64 43 /* unpadded base64url of 32 bytes */
#define DIGEST_BYTES FB_IDENTITY_DIGEST_BYTES
#define PEPPER_BYTES 32
/* Fresh random ids tried when one collides with an existing row. */
#define INSERT_ATTEMPTS 4

int fb_auth_sodium_ready(fb_err *err);

/* [a-z0-9_.-]{1,64}: usernames and team names. */
bool fb_auth_valid_name(const char *s);
/* Printable ASCII, 1..max bytes: key and org names. */
bool fb_auth_valid_label(const char *s, size_t max);
/* prefix followed by exactly hexlen lower-case hex digits. */
bool fb_auth_valid_id(const char *s, const char *prefix, size_t hexlen);
/* prefix + 2*nbytes random hex digits. */
int fb_auth_new_id(const char *prefix, size_t nbytes, char out[FB_ID_MAX], fb_err *err);

/* The store's status as auth's: not_found, exists and conflict keep their
 * meaning (conflict: the rows changed under the request, EDENIED), the
 * rest is EINTERNAL. */
int fb_auth_from_store(int store_status);

/* STATE_DIR/auth.pepper, created on first use. */
int fb_auth_pepper_load(fb_store *st, uint8_t pepper[PEPPER_BYTES], fb_err *err);
/* Keyed BLAKE2b-256 over a domain tag, the key id and the secret. */
void fb_auth_key_digest(const uint8_t pepper[PEPPER_BYTES], const char id_hex[KEY_ID_HEX],
                        const uint8_t secret[KEY_SECRET_BYTES], uint8_t out[DIGEST_BYTES]);
/* "Bearer fbk_<12 hex>_<43 base64url>" -> id hex (pointing into v) and
 * secret; -1 for anything else. */
int fb_auth_parse_bearer(const char *v, size_t len, const char **id_hex, uint8_t secret[KEY_SECRET_BYTES]);

/* Makes a key record for user_id with a fresh id and secret: *rec ready
 * to insert, the key text in key_out.  The caller wipes rec and key_out
 * on failure. */
int fb_auth_key_mint(const uint8_t pepper[PEPPER_BYTES], const char *user_id, const char *name, fb_perm scopes,
                     const char *expires_norm, const char *parent_key_id, fb_key_record *rec, char *key_out,
                     fb_err *err);

/* ---- verified keys remembered for a moment (keycache.c) ---- */

#define FB_AUTH_KEYCACHE_TTL_MS 2000
/* Read before the store is read for a verification; passed to put. */
uint64_t fb_auth_keycache_generation(void);
/* Everything remembered stops hitting, before this returns (revocations,
 * disabling or enabling a user). */
void fb_auth_keycache_invalidate(void);
/* true: key_id with this very secret was verified less than the TTL ago,
 * in the current generation, and has not expired by now; *out is its
 * principal. */
bool fb_auth_keycache_get(const fb_store *st, const char *key_id, const uint8_t secret[KEY_SECRET_BYTES],
                          fb_principal *out);
/* Remembers a successful verification that began at generation gen
 * (dropped if the generation moved since). expires_at: "" for never. */
void fb_auth_keycache_put(const fb_store *st, const char *key_id, const uint8_t secret[KEY_SECRET_BYTES],
                          const fb_principal *who, const char *expires_at, uint64_t gen);

/* The principal of u acting through key_id (or "") with scopes. */
void fb_auth_fill_principal(fb_principal *p, const fb_user *u, const char *key_id, fb_perm scopes);

#endif

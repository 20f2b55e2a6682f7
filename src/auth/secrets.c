/*
 * secrets.c - auth's secret material: the pepper file, API key digests and
 * minting, the bearer header's syntax, passwords (rules, argon2id hashing,
 * verification, generation), and the small shape checks every auth file
 * uses.
 *
 * Secret material this file creates - key secrets, their base64 text,
 * digests, the pepper - lives in local buffers that are wiped with
 * sodium_memzero on every path out.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/internal.h"

#define PEPPER_FILE "auth.pepper"

_Static_assert(KEY_PREFIX_LEN + KEY_ID_HEX + 1 + KEY_SECRET_B64 == FB_AUTH_KEY_TEXT_LEN, "key text length");
_Static_assert(FB_AUTH_KEY_TEXT_LEN < FB_AUTH_KEY_TEXT_MAX, "key buffer");
_Static_assert(FB_AUTH_PWHASH_MAX == crypto_pwhash_STRBYTES, "password hash buffer");
_Static_assert(sodium_base64_ENCODED_LEN(KEY_SECRET_BYTES, sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   KEY_SECRET_B64 + 1,
               "base64 length");

/* ---- shapes ------------------------------------------------------------------- */

int fb_auth_sodium_ready(fb_err *err)
{
    if (sodium_init() < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "libsodium failed to initialise");
    return 0;
}

bool fb_auth_valid_name(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, FB_AUTH_NAME_MAX + 1);
    if (n == 0 || n > FB_AUTH_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

bool fb_auth_valid_label(const char *s, size_t max)
{
    if (!s)
        return false;
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool fb_auth_valid_id(const char *s, const char *prefix, size_t hexlen)
{
    if (!s)
        return false;
    size_t pl = strlen(prefix);
    return strnlen(s, FB_ID_MAX) == pl + hexlen && strncmp(s, prefix, pl) == 0 && lower_hex(s + pl, hexlen);
}

int fb_auth_new_id(const char *prefix, size_t nbytes, char out[FB_ID_MAX], fb_err *err)
{
    uint8_t b[16];
    char hex[33];
    if (nbytes > sizeof b || fb_random_bytes(b, nbytes) < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot read random bytes: %s", strerror(errno));
    fb_hex(b, nbytes, hex);
    snprintf(out, FB_ID_MAX, "%s%s", prefix, hex);
    return 0;
}

int fb_auth_from_store(int status)
{
    switch (status) {
    case FB_STORE_OK: return FB_AUTH_OK;
    case FB_STORE_ENOTFOUND: return FB_AUTH_ENOTFOUND;
    case FB_STORE_EEXISTS: return FB_AUTH_EEXISTS;
    case FB_STORE_ECONFLICT: return FB_AUTH_EDENIED;
    case FB_STORE_EBUSY: return FB_AUTH_EUNAVAILABLE;
    default: return FB_AUTH_EINTERNAL;
    }
}

/* ---- the pepper ------------------------------------------------------------------ */

static int pepper_read(int fd, const char *path, uint8_t pepper[PEPPER_BYTES], fb_err *err)
{
    struct stat sb;
    if (fstat(fd, &sb) < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot stat %s: %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode) || sb.st_size != PEPPER_BYTES)
        return fb_fail_code(err, FB_AUTH_EINTERNAL,
                            "%s is not a %d-byte regular file; restore it from backup (API keys "
                            "cannot be checked without it)",
                            path, PEPPER_BYTES);
    if (sb.st_uid != geteuid() || (sb.st_mode & 077) != 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL,
                            "%s must be owned by uid %u and private (mode 0600); it is uid %u mode %04o", path,
                            (unsigned)geteuid(), (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777));
    if (fb_read_exact(fd, pepper, PEPPER_BYTES) < 0) {
        sodium_memzero(pepper, PEPPER_BYTES);
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot read %s: %s", path, strerror(errno));
    }
    return 0;
}

int fb_auth_pepper_load(fb_store *st, uint8_t pepper[PEPPER_BYTES], fb_err *err)
{
    char path[PATH_MAX];
    const char *dir = fb_store_state_dir(st);
    int n = snprintf(path, sizeof path, "%s/%s", dir ? dir : ".", PEPPER_FILE);
    if (n < 0 || (size_t)n >= sizeof path)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "state directory path too long");
    for (int attempt = 0; attempt < 2; attempt++) {
        cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0)
            return pepper_read(fd, path, pepper, err);
        if (errno != ENOENT)
            return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot open %s: %s", path, strerror(errno));
        uint8_t fresh[PEPPER_BYTES];
        int rc = 0;
        if (fb_random_bytes(fresh, sizeof fresh) < 0)
            rc = fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot read random bytes: %s", strerror(errno));
        else if (fb_create_file_once(path, fresh, sizeof fresh, err) < 0)
            rc = FB_AUTH_EINTERNAL;
        sodium_memzero(fresh, sizeof fresh);
        if (rc < 0)
            return rc;
    }
    return fb_fail_code(err, FB_AUTH_EINTERNAL, "%s vanished while being created", path);
}

/* ---- API keys ----------------------------------------------------------------------- */

void fb_auth_key_digest(const uint8_t pepper[PEPPER_BYTES], const char id_hex[KEY_ID_HEX],
                        const uint8_t secret[KEY_SECRET_BYTES], uint8_t out[DIGEST_BYTES])
{
    /* Binding the id means a digest copied onto another row does not
     * match there. */
    static const char tag[] = "forgebox api key v1";
    crypto_generichash_state h;
    crypto_generichash_init(&h, pepper, PEPPER_BYTES, DIGEST_BYTES);
    crypto_generichash_update(&h, (const unsigned char *)tag, sizeof tag);
    crypto_generichash_update(&h, (const unsigned char *)id_hex, KEY_ID_HEX);
    crypto_generichash_update(&h, secret, KEY_SECRET_BYTES);
    crypto_generichash_final(&h, out, DIGEST_BYTES);
    sodium_memzero(&h, sizeof h);
}

int fb_auth_key_mint(const uint8_t pepper[PEPPER_BYTES], const char *user_id, const char *name, fb_perm scopes,
                     const char *expires_norm, const char *parent_key_id, fb_key_record *rec, char *key_out,
                     fb_err *err)
{
    uint8_t secret[KEY_SECRET_BYTES];
    char b64[KEY_SECRET_B64 + 1];
    memset(rec, 0, sizeof *rec);
    fb_api_key_info *i = &rec->info;
    int rc = fb_auth_new_id(KEY_ID_PREFIX, KEY_ID_BYTES, i->id, err);
    if (rc < 0)
        return rc;
    if (fb_random_bytes(secret, sizeof secret) < 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot read random bytes: %s", strerror(errno));
    const char *id_hex = i->id + strlen(KEY_ID_PREFIX);
    fb_auth_key_digest(pepper, id_hex, secret, rec->digest);
    sodium_bin2base64(b64, sizeof b64, secret, sizeof secret, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(key_out, FB_AUTH_KEY_TEXT_MAX, KEY_PREFIX "%.*s_%s", KEY_ID_HEX, id_hex, b64);
    snprintf(i->user_id, sizeof i->user_id, "%s", user_id);
    snprintf(i->name, sizeof i->name, "%s", name);
    snprintf(i->expires_at, sizeof i->expires_at, "%s", expires_norm ? expires_norm : "");
    snprintf(i->parent_key_id, sizeof i->parent_key_id, "%s", parent_key_id ? parent_key_id : "");
    i->scopes = scopes;
    fb_time_now(i->created_at);
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(b64, sizeof b64);
    return 0;
}

static bool is_b64url(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

int fb_auth_parse_bearer(const char *v, size_t len, const char **id_hex, uint8_t secret[KEY_SECRET_BYTES])
{
    static const char scheme[] = "Bearer ";
    const size_t sl = sizeof scheme - 1;
    if (len != sl + FB_AUTH_KEY_TEXT_LEN || strncasecmp(v, scheme, sl - 1) != 0 || v[sl - 1] != ' ')
        return -1;
    const char *k = v + sl;
    if (memcmp(k, KEY_PREFIX, KEY_PREFIX_LEN) != 0)
        return -1;
    const char *h = k + KEY_PREFIX_LEN;
    if (!lower_hex(h, KEY_ID_HEX) || h[KEY_ID_HEX] != '_')
        return -1;
    const char *b = h + KEY_ID_HEX + 1;
    for (size_t i = 0; i < KEY_SECRET_B64; i++)
        if (!is_b64url(b[i]))
            return -1;
    size_t bin_len = 0;
    const char *end = NULL;
    /* Rejects non-canonical encodings (stray low bits) as well. */
    if (sodium_base642bin(secret, KEY_SECRET_BYTES, b, KEY_SECRET_B64, NULL, &bin_len, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        bin_len != KEY_SECRET_BYTES || end != b + KEY_SECRET_B64)
        return -1;
    *id_hex = h;
    return 0;
}

/* ---- passwords ------------------------------------------------------------------------ */

int fb_auth_password_check_rules(const char *password, fb_err *err)
{
    if (!password)
        return fb_fail_code(err, FB_AUTH_EINVAL, "a password is required");
    size_t n = strnlen(password, FB_AUTH_PASSWORD_MAX + 1);
    if (n > FB_AUTH_PASSWORD_MAX)
        return fb_fail_code(err, FB_AUTH_EINVAL, "password longer than %d bytes", FB_AUTH_PASSWORD_MAX);
    size_t chars = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)password[i] & 0xc0) != 0x80)
            chars++;
    if (chars < FB_AUTH_PASSWORD_MIN)
        return fb_fail_code(err, FB_AUTH_EINVAL, "password shorter than %d characters", FB_AUTH_PASSWORD_MIN);
    return 0;
}

int fb_auth_password_hash(const char *password, char out[FB_AUTH_PWHASH_MAX], fb_err *err)
{
    int rc = fb_auth_sodium_ready(err);
    if (rc < 0 || (rc = fb_auth_password_check_rules(password, err)) < 0)
        return rc;
    if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                          crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
        return fb_fail_code(err, FB_AUTH_EINTERNAL, "cannot hash the password (argon2id needs %zu MiB of memory)",
                            (size_t)crypto_pwhash_MEMLIMIT_INTERACTIVE >> 20);
    return 0;
}

bool fb_auth_password_verify(const char *hash, const char *password)
{
    if (!hash || !password || sodium_init() < 0)
        return false;
    char h[FB_AUTH_PWHASH_MAX];
    size_t hl = strnlen(hash, sizeof h);
    size_t pl = strnlen(password, FB_AUTH_PASSWORD_MAX + 1);
    if (hl == sizeof h || pl > FB_AUTH_PASSWORD_MAX)
        return false;
    memset(h, 0, sizeof h);
    memcpy(h, hash, hl);
    return crypto_pwhash_str_verify(h, password, pl) == 0;
}

int fb_auth_password_generate(char out[FB_AUTH_GENERATED_PASSWORD_MAX], fb_err *err)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    int rc = fb_auth_sodium_ready(err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < FB_AUTH_GENERATED_PASSWORD_LEN; i++)
        out[i] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[FB_AUTH_GENERATED_PASSWORD_LEN] = '\0';
    return 0;
}

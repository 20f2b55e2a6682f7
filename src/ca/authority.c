/*
 * authority.c - creating and loading the organisation CA (ca.h), and the
 * names of roles.
 *
 * The CA key is ECDSA P-256: small, fast to verify on every handshake and
 * supported by every TLS 1.3 stack; the certificate is CA:TRUE with
 * pathlen 0, so it signs leaves only, never an intermediate that could
 * issue behind the operator's back.  Init refuses a directory that already
 * holds a CA (a second init would orphan every issued certificate), and
 * writes the key through fb_create_file_once (0600, never replacing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/internal.h"

static const char *const role_names[FB_CA_ROLE_COUNT] = {"node", "gateway"};

int fb_ca_role_from_name(const char *name)
{
    for (int i = 0; i < FB_CA_ROLE_COUNT; i++)
        if (name && strcmp(name, role_names[i]) == 0)
            return i;
    return -1;
}

const char *fb_ca_role_name(fb_ca_role role)
{
    return (unsigned)role < FB_CA_ROLE_COUNT ? role_names[role] : "?";
}

int fb_ca_roles_parse(const char *list, unsigned *set, char *why, size_t why_cap)
{
    unsigned s = 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, ", \t");
        if (n == 0)
            break;
        char word[16];
        int r = -1;
        if (n < sizeof word) {
            memcpy(word, p, n);
            word[n] = '\0';
            r = fb_ca_role_from_name(word);
        }
        if (r < 0) {
            snprintf(why, why_cap, "unknown role \"%.*s\" (roles are node and gateway)", (int)(n > 32 ? 32 : n), p);
            return -1;
        }
        s |= FB_CA_ROLE_BIT(r);
        p += n;
    }
    if (!s) {
        snprintf(why, why_cap, "must name at least one role (node, gateway)");
        return -1;
    }
    *set = s;
    return 0;
}

bool fb_ca_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 64 || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
              c == '_'))
            return false;
    }
    return true;
}

/* ---- shared helpers --------------------------------------------------------- */

int ca_tls_fail(fb_err *err, int rc, const char *what)
{
    return fb_fail_code(err, -FB_CA_ETLS, "%s: %s", what, gnutls_strerror(rc));
}

int ca_path(const char *dir, const char *name, char *out, size_t cap, fb_err *err)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca: the directory path is too long");
    return 0;
}

int ca_read_datum(const char *path, gnutls_datum_t *d, fb_err *err)
{
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    if (!buf)
        return fb_fail_code(err, -FB_CA_EIO, "out of memory");
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    size_t got = 0;
    if (fd < 0 || fb_read_up_to(fd, buf, cap - 1, &got) < 0) {
        int e = errno;
        free(buf);
        errno = e;
        return fb_fail_code(err, e == ENOENT ? -FB_CA_ENOCA : -FB_CA_EIO, "cannot read %s: %s", path, strerror(e));
    }
    buf[got] = '\0';
    d->data = (unsigned char *)buf;
    d->size = (unsigned)got;
    return 0;
}

int ca_replace_file(const char *path, const void *data, size_t len, mode_t mode, fb_err *err)
{
    char tmp[4200];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof tmp)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca: path too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return fb_fail_code(err, -FB_CA_EIO, "cannot write %s: %s", tmp, strerror(errno));
    if (fchmod(fd, mode) < 0 || fb_write_all(fd, data, len) < 0 || fsync(fd) < 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return fb_fail_code(err, -FB_CA_EIO, "cannot write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int e = errno;
        unlink(tmp);
        return fb_fail_code(err, -FB_CA_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(e));
    }
    return 0;
}

int ca_new_serial(unsigned char serial[CA_SERIAL_BYTES])
{
    if (fb_random_bytes(serial, CA_SERIAL_BYTES) < 0)
        return -1;
    serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x10); /* positive, no leading zero byte */
    return 0;
}

int ca_new_key(gnutls_x509_privkey_t *key, fb_err *err)
{
    int rc = gnutls_x509_privkey_init(key);
    if (rc < 0)
        return ca_tls_fail(err, rc, "ca: key");
    rc = gnutls_x509_privkey_generate(*key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    if (rc < 0) {
        gnutls_x509_privkey_deinit(*key);
        return ca_tls_fail(err, rc, "ca: generating a P-256 key");
    }
    return 0;
}

int ca_write_key(const char *path, gnutls_x509_privkey_t key, fb_err *err)
{
    gnutls_datum_t pem = {0};
    int rc = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &pem);
    if (rc < 0)
        return ca_tls_fail(err, rc, "ca: exporting the key");
    if (access(path, F_OK) == 0) {
        gnutls_memset(pem.data, 0, pem.size);
        gnutls_free(pem.data);
        return fb_fail_code(err, -FB_CA_EEXIST, "%s exists already; not replacing it", path);
    }
    int r = fb_create_file_once(path, pem.data, pem.size, err);
    gnutls_memset(pem.data, 0, pem.size);
    gnutls_free(pem.data);
    return r < 0 ? -FB_CA_EIO : 0; /* err says why */
}

int ca_load(const char *dir, ca_authority *ca, fb_err *err)
{
    memset(ca, 0, sizeof *ca);
    char p[4096];
    gnutls_datum_t d = {0};
    int r;
    if ((r = ca_path(dir, "ca.crt", p, sizeof p, err)) < 0 || (r = ca_read_datum(p, &d, err)) < 0)
        return r;
    int rc = gnutls_x509_crt_init(&ca->crt);
    if (rc >= 0)
        rc = gnutls_x509_crt_import(ca->crt, &d, GNUTLS_X509_FMT_PEM);
    free(d.data);
    if (rc < 0) {
        ca_unload(ca);
        return ca_tls_fail(err, rc, "ca: reading ca.crt");
    }
    if ((r = ca_path(dir, "ca.key", p, sizeof p, err)) < 0 || (r = ca_read_datum(p, &d, err)) < 0) {
        ca_unload(ca);
        return r;
    }
    rc = gnutls_x509_privkey_init(&ca->key);
    if (rc >= 0)
        rc = gnutls_x509_privkey_import(ca->key, &d, GNUTLS_X509_FMT_PEM);
    gnutls_memset(d.data, 0, d.size);
    free(d.data);
    if (rc < 0) {
        ca_unload(ca);
        return ca_tls_fail(err, rc, "ca: reading ca.key");
    }
    return 0;
}

void ca_unload(ca_authority *ca)
{
    if (ca->crt)
        gnutls_x509_crt_deinit(ca->crt);
    if (ca->key)
        gnutls_x509_privkey_deinit(ca->key);
    memset(ca, 0, sizeof *ca);
}

/* ---- init ------------------------------------------------------------------ */

static int build_ca_cert(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, const char *org, unsigned days,
                         fb_err *err)
{
    unsigned char serial[CA_SERIAL_BYTES];
    unsigned char kid[64];
    size_t kid_len = sizeof kid;
    time_t now = time(NULL);
    int rc;
    if (ca_new_serial(serial) < 0)
        return fb_fail_code(err, -FB_CA_EIO, "ca: no random bytes");
    if ((rc = gnutls_x509_crt_set_version(crt, 3)) < 0 ||
        (rc = gnutls_x509_crt_set_serial(crt, serial, sizeof serial)) < 0 ||
        (rc = gnutls_x509_crt_set_activation_time(crt, now - 60)) < 0 ||
        (rc = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400)) < 0 ||
        (rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_ORGANIZATION_NAME, 0, org, (unsigned)strlen(org))) < 0)
        return ca_tls_fail(err, rc, "ca: building the CA certificate");
    char cn[128];
    snprintf(cn, sizeof cn, "%s ForgeBox CA", org);
    if ((rc = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, (unsigned)strlen(cn))) < 0 ||
        (rc = gnutls_x509_crt_set_key(crt, key)) < 0 || (rc = gnutls_x509_crt_set_basic_constraints(crt, 1, 0)) < 0 ||
        (rc = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN)) < 0 ||
        (rc = gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, kid, &kid_len)) < 0 ||
        (rc = gnutls_x509_crt_set_subject_key_id(crt, kid, kid_len)) < 0 ||
        (rc = gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0)) < 0)
        return ca_tls_fail(err, rc, "ca: signing the CA certificate");
    return 0;
}

int fb_ca_init(const char *dir, const char *org, unsigned days, fb_err *err)
{
    if (!org || !fb_ca_name_valid(org))
        return fb_fail_code(err, -FB_CA_EINVAL, "ca init: --org must be 1-64 of A-Z a-z 0-9 . _ -");
    if (days < 1 || days > CA_MAX_DAYS)
        return fb_fail_code(err, -FB_CA_EINVAL, "ca init: --days must be between 1 and %u", CA_MAX_DAYS);
    if (fb_mkdir_p(dir, 0700, err) < 0)
        return -FB_CA_EIO; /* err says why */
    /* A directory that existed keeps nobody else's access: it will hold the key. */
    if (chmod(dir, 0700) < 0)
        return fb_fail_code(err, -FB_CA_EIO, "ca init: cannot make %s private (chmod 0700): %s", dir, strerror(errno));
    char crt_path[4096], key_path[4096];
    if (ca_path(dir, "ca.crt", crt_path, sizeof crt_path, err) < 0 ||
        ca_path(dir, "ca.key", key_path, sizeof key_path, err) < 0)
        return -FB_CA_EINVAL;
    if (access(crt_path, F_OK) == 0 || access(key_path, F_OK) == 0)
        return fb_fail_code(err, -FB_CA_EEXIST,
                            "ca init: %s already holds a CA; refusing to replace it (every certificate it "
                            "issued would stop working)",
                            dir);
    gnutls_x509_privkey_t key = NULL;
    gnutls_x509_crt_t crt = NULL;
    if (ca_new_key(&key, err) < 0)
        return -FB_CA_ETLS;
    int r = -FB_CA_ETLS, rc = gnutls_x509_crt_init(&crt);
    gnutls_datum_t pem = {0};
    if (rc < 0) {
        ca_tls_fail(err, rc, "ca init");
        goto out;
    }
    if (build_ca_cert(crt, key, org, days, err) < 0)
        goto out;
    if ((rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &pem)) < 0) {
        ca_tls_fail(err, rc, "ca init: exporting the certificate");
        goto out;
    }
    /* The key first: a crashed init leaves a key without a certificate,
     * which the next init refuses rather than silently pairing anew. */
    if ((r = ca_write_key(key_path, key, err)) < 0)
        goto out;
    r = -FB_CA_EIO;
    if (fb_create_file_once(crt_path, pem.data, pem.size, err) < 0 || chmod(crt_path, 0644) < 0)
        goto out;
    r = fb_ca_crl_write(dir, 30, err);
out:
    gnutls_free(pem.data);
    if (crt)
        gnutls_x509_crt_deinit(crt);
    gnutls_x509_privkey_deinit(key);
    return r;
}

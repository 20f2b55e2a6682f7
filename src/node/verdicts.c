/*
 * verdicts.c - the memory of accepted certificate chains (verdicts.h says
 * what it keeps and why that answers what a fresh verification would).
 */
#define _GNU_SOURCE
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "node/verdicts.h"

typedef struct nv_entry {
    bool used;
    uint8_t key[32];
    struct nv_file ca, crl;
    time_t not_after;               /* the leaf's, wall clock */
    int64_t born_s;                 /* monotonic */
    fb_ca_peer peer;
} nv_entry;

struct nv_cache {
    pthread_mutex_t mu;
    char *ca_path, *crl_path;
    nv_entry e[NV_ENTRIES];
    unsigned next;                  /* the slot the next entry takes */
};

nv_cache *nv_cache_new(const char *ca_path, const char *crl_path)
{
    if (!ca_path || sodium_init() < 0)
        return NULL;
    nv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ca_path = strdup(ca_path);
    c->crl_path = crl_path ? strdup(crl_path) : NULL;
    if (!c->ca_path || (crl_path && !c->crl_path)) {
        nv_cache_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void nv_cache_free(nv_cache *c)
{
    if (!c)
        return;
    free(c->ca_path);
    free(c->crl_path);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static bool stamp(const char *path, struct nv_file *f)
{
    memset(f, 0, sizeof *f);
    if (!path)
        return true; /* no such file configured: nothing to change */
    struct stat st;
    if (stat(path, &st) < 0)
        return false;
    f->present = true;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->size = st.st_size;
    f->mtime_s = (int64_t)st.st_mtim.tv_sec;
    f->mtime_ns = (int64_t)st.st_mtim.tv_nsec;
    return true;
}

static bool same_file(const struct nv_file *a, const struct nv_file *b)
{
    return a->present == b->present && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_s == b->mtime_s && a->mtime_ns == b->mtime_ns;
}

static int64_t mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec;
}

bool nv_check(nv_cache *c, void *gnutls_session, const char *want_name, fb_ca_peer *peer, nv_pending *p)
{
    memset(p, 0, sizeof *p);
    if (!c || !gnutls_session)
        return false;
    unsigned n = 0;
    const gnutls_datum_t *list = gnutls_certificate_get_peers((gnutls_session_t)gnutls_session, &n);
    if (!list || n == 0)
        return false;
    if (!stamp(c->ca_path, &p->ca) || !stamp(c->crl_path, &p->crl))
        return false;
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof p->key);
    for (unsigned i = 0; i < n; i++) {
        uint8_t len[8];
        uint64_t l = list[i].size;
        for (int k = 0; k < 8; k++)
            len[k] = (uint8_t)(l >> (8 * k));
        crypto_generichash_update(&h, len, sizeof len);
        crypto_generichash_update(&h, list[i].data, list[i].size);
    }
    uint8_t tag = want_name ? 1 : 0;
    crypto_generichash_update(&h, &tag, 1);
    if (want_name)
        crypto_generichash_update(&h, (const uint8_t *)want_name, strlen(want_name) + 1);
    crypto_generichash_final(&h, p->key, sizeof p->key);
    p->leaf = list[0].data;
    p->leaf_len = list[0].size;
    p->usable = true;

    bool hit = false;
    time_t now = time(NULL);
    int64_t mnow = mono_s();
    pthread_mutex_lock(&c->mu);
    for (unsigned i = 0; i < NV_ENTRIES && !hit; i++) {
        nv_entry *e = &c->e[i];
        if (!e->used || sodium_memcmp(e->key, p->key, sizeof p->key) != 0)
            continue;
        if (same_file(&e->ca, &p->ca) && same_file(&e->crl, &p->crl) && now < e->not_after &&
            mnow - e->born_s < NV_TTL_S) {
            hit = true;
            if (peer)
                *peer = e->peer;
        } else {
            e->used = false; /* stale: its inputs changed */
        }
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void nv_put(nv_cache *c, const nv_pending *p, const fb_ca_peer *peer)
{
    if (!c || !p->usable || !peer)
        return;
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    gnutls_datum_t d = {(unsigned char *)p->leaf, (unsigned)p->leaf_len};
    time_t not_after = (time_t)-1;
    if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) >= 0)
        not_after = gnutls_x509_crt_get_expiration_time(crt);
    gnutls_x509_crt_deinit(crt);
    if (not_after == (time_t)-1)
        return;
    pthread_mutex_lock(&c->mu);
    nv_entry *e = &c->e[c->next++ % NV_ENTRIES];
    for (unsigned i = 0; i < NV_ENTRIES; i++)
        if (c->e[i].used && sodium_memcmp(c->e[i].key, p->key, sizeof p->key) == 0)
            e = &c->e[i]; /* the same chain again: refresh it */
    e->used = true;
    memcpy(e->key, p->key, sizeof e->key);
    e->ca = p->ca;
    e->crl = p->crl;
    e->not_after = not_after;
    e->born_s = mono_s();
    e->peer = *peer;
    pthread_mutex_unlock(&c->mu);
}

/*
 * env.c - the FORGEBOX_* environment layer (fb_config_apply_env) and the
 * checks that involve several keys or the filesystem (fb_config_validate).
 *
 * A FORGEBOX_ variable that is no key but looks like a misspelt one is an
 * error with a suggestion; variables that belong to other parts of
 * ForgeBox (cfg_foreign_env) are left alone.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/internal.h"

/* ---- environment ----------------------------------------------------------- */

static bool looks_like_config(const char *name)
{
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false; /* not a name anyone meant for us */
    for (size_t i = 0; i < cfg_nforeign_env; i++)
        if (strcmp(cfg_foreign_env[i], name) == 0)
            return false;
    const char *rest = name + strlen(ENV_PREFIX);
    for (size_t i = 0; i < cfg_nsections; i++) {
        size_t n = strlen(cfg_sections[i]);
        if (strncasecmp(rest, cfg_sections[i], n) == 0 && rest[n] == '_')
            return true;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        char e[MAX_NAME + 16];
        cfg_env_name(&cfg_keys[i], e, sizeof e);
        if (cfg_edit_distance(name, e) <= 2)
            return true;
    }
    return false;
}

static const struct cfg_key *closest_env(const char *name, char *out, size_t cap)
{
    const struct cfg_key *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < NKEYS; i++) {
        char e[MAX_NAME + 16];
        cfg_env_name(&cfg_keys[i], e, sizeof e);
        size_t d = cfg_edit_distance(name, e);
        if (d < best_d) {
            best_d = d;
            best = &cfg_keys[i];
            snprintf(out, cap, "%s", e);
        }
    }
    return best_d <= 4 ? best : NULL;
}

int fb_config_apply_env(fb_config *cfg, char *const *envp, fb_err *err)
{
    const size_t plen = strlen(ENV_PREFIX);
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, plen) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        size_t nlen = (size_t)(eq - *e);
        char name[MAX_NAME + 16];
        if (nlen >= sizeof name) {
            /* Longer than any key's name: cannot be one, cannot be close. */
            continue;
        }
        memcpy(name, *e, nlen);
        name[nlen] = '\0';

        const struct cfg_key *k = NULL;
        for (size_t i = 0; i < NKEYS && !k; i++) {
            char en[MAX_NAME + 16];
            cfg_env_name(&cfg_keys[i], en, sizeof en);
            if (strcmp(en, name) == 0)
                k = &cfg_keys[i];
        }
        if (k) {
            if (cfg_set_value(cfg, k, eq + 1, name, false, err) < 0)
                return -1;
            continue;
        }
        if (!looks_like_config(name))
            continue;
        char near[MAX_NAME + 16];
        const struct cfg_key *guess = closest_env(name, near, sizeof near);
        if (guess)
            return fb_fail(err,
                           "config: %s (environment): no such setting; did you mean %s (%s)?",
                           name, near, guess->name);
        return fb_fail(err,
                       "config: %s (environment): no such setting (docs/configuration.md lists "
                       "them all)",
                       name);
    }
    return 0;
}

/* ---- checks across keys --------------------------------------------------- */

static const char *src_of(const fb_config *cfg, const char *name)
{
    return fb_config_source(cfg, name);
}

static bool is_default(const fb_config *cfg, const char *name)
{
    return cfg->src_[cfg_key_index(cfg_find_key(name))] == NULL;
}

/* lo must not exceed hi.  Blames hi when hi was set and lo was not (the
 * operator lowered the ceiling), lo otherwise. */
static int check_le(const fb_config *cfg, const char *lo, uint64_t lov, const char *hi,
                    uint64_t hiv, const char *what, fb_err *err)
{
    if (lov <= hiv)
        return 0;
    if (is_default(cfg, lo) && !is_default(cfg, hi))
        return fb_fail(err, "config: %s (%s): must be at least %s (%llu, %s)%s, got %llu", hi,
                       src_of(cfg, hi), lo, (unsigned long long)lov, src_of(cfg, lo), what,
                       (unsigned long long)hiv);
    return fb_fail(err, "config: %s (%s): must not exceed %s (%llu, %s)%s, got %llu", lo,
                   src_of(cfg, lo), hi, (unsigned long long)hiv, src_of(cfg, hi), what,
                   (unsigned long long)lov);
}

static int check_readable_file(const fb_config *cfg, const char *name, const char *path,
                               fb_err *err)
{
    const struct cfg_key *k = cfg_find_key(name);
    bool redact = cfg->redact_[cfg_key_index(k)];
    char shown[300];
    cfg_show_value(path, redact, shown, sizeof shown);
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return fb_fail(err, "config: %s (%s): cannot read %s: %s", name, src_of(cfg, name),
                       shown, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return fb_fail(err, "config: %s (%s): %s is not a regular file", name, src_of(cfg, name),
                       shown);
    return 0;
}

int fb_config_validate(const fb_config *cfg, fb_err *err)
{
    const fb_config *c = cfg;
    if (!c->listen || !c->state_dir || !c->run_dir)
        return fb_fail(err, "config: internal: listen, state_dir and run_dir must be set");

    if ((c->tls.cert == NULL) != (c->tls.key == NULL)) {
        const char *set = c->tls.cert ? "tls.cert" : "tls.key";
        const char *unset = c->tls.cert ? "tls.key" : "tls.cert";
        return fb_fail(err,
                       "config: %s (%s): %s must be set too (TLS needs both the certificate "
                       "and its private key, or neither)",
                       set, src_of(c, set), unset);
    }
    if (c->tls.cert) {
        if (check_readable_file(c, "tls.cert", c->tls.cert, err) < 0 ||
            check_readable_file(c, "tls.key", c->tls.key, err) < 0)
            return -1;
    }
    if (c->tls.client_ca && !c->tls.cert)
        return fb_fail(err,
                       "config: tls.client_ca (%s): needs tls.cert and tls.key (client certificates "
                       "are asked for only over TLS)",
                       src_of(c, "tls.client_ca"));
    if (c->tls.client_crl && !c->tls.client_ca)
        return fb_fail(err, "config: tls.client_crl (%s): needs tls.client_ca (a CRL is the client CA's)",
                       src_of(c, "tls.client_crl"));
    if (c->tls.client_ca && check_readable_file(c, "tls.client_ca", c->tls.client_ca, err) < 0)
        return -1;
    if (c->tls.client_crl && check_readable_file(c, "tls.client_crl", c->tls.client_crl, err) < 0)
        return -1;
    if ((c->nodes.tls_cert == NULL) != (c->nodes.tls_key == NULL))
        return fb_fail(err, "config: nodes.tls_cert and nodes.tls_key must be set together (%s)",
                       src_of(c, c->nodes.tls_cert ? "nodes.tls_cert" : "nodes.tls_key"));
    if (c->nodes.mode == FB_NODES_REMOTE && (!c->nodes.tls_cert || !c->nodes.tls_ca))
        return fb_fail(err,
                       "config: nodes.mode (%s): remote needs nodes.tls_cert, nodes.tls_key and nodes.tls_ca "
                       "(every call to a node is mutual TLS; `forgebox ca issue --role gateway` makes the "
                       "certificate)",
                       src_of(c, "nodes.mode"));
    if (c->nodes.heartbeat_s * 2 > c->nodes.down_after_s)
        return fb_fail(err,
                       "config: nodes.down_after_s (%s) must be at least twice nodes.heartbeat_s (%s), "
                       "or one late heartbeat marks a live node down",
                       src_of(c, "nodes.down_after_s"), src_of(c, "nodes.heartbeat_s"));
    const char *node_files[] = {"nodes.tls_cert", "nodes.tls_key", "nodes.tls_ca", "nodes.tls_crl"};
    const char *node_paths[] = {c->nodes.tls_cert, c->nodes.tls_key, c->nodes.tls_ca, c->nodes.tls_crl};
    for (size_t i = 0; i < 4; i++)
        if (node_paths[i] && check_readable_file(c, node_files[i], node_paths[i], err) < 0)
            return -1;
    if (c->sandbox.backend == FB_BACKEND_VM && c->sandbox.memory_mib < FB_MIN_VM_MEMORY_MIB)
        return fb_fail(err,
                       "config: sandbox.memory_mib (%s): must be at least %d with the vm backend "
                       "(a guest kernel does not boot in less), got %llu",
                       src_of(c, "sandbox.memory_mib"), FB_MIN_VM_MEMORY_MIB,
                       (unsigned long long)c->sandbox.memory_mib);
    if (check_le(c, "sandbox.ttl_s", c->sandbox.ttl_s, "sandbox.max_ttl_s", c->sandbox.max_ttl_s,
                 "", err) < 0 ||
        check_le(c, "sandbox.memory_mib", c->sandbox.memory_mib, "sandbox.max_memory_mib",
                 c->sandbox.max_memory_mib, "", err) < 0 ||
        check_le(c, "sandbox.memory_mib", c->sandbox.memory_mib,
                 "quotas.max_memory_mib_per_team", c->quotas.max_memory_mib_per_team,
                 " (otherwise no team can create a default sandbox)", err) < 0 ||
        check_le(c, "sandbox.vcpus", c->sandbox.vcpus, "sandbox.max_vcpus", c->sandbox.max_vcpus, "", err) < 0 ||
        check_le(c, "sandbox.vcpus", c->sandbox.vcpus, "quotas.max_vcpus_per_team",
                 c->quotas.max_vcpus_per_team, " (otherwise no team can create a default sandbox)", err) < 0)
        return -1;
    return 0;
}

/*
 * node.c - fb_node_run: a node's life from start to stop (node.h).
 *
 * Start: the store (whose state directory holds this node's id and a copy
 * of the gateways' audit key), what a previous process left in the run
 * directory reaped, the registration (which marks whatever this node id
 * still held live as lost), the warm pool if configured, the listener,
 * then the expiry reaper and the heartbeat.  Stop (SIGTERM/SIGINT): no
 * new connections, every sandbox destroyed and its record marked
 * destroyed, the node marked stopped.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <sodium.h>

#include "audit/audit.h"
#include "core/core.h"
#include "gateway/listener.h"
#include "node/internal.h"

/* The node's own certificate must be a node certificate of the CA, under
 * exactly --name: gateways check the same against the store's record. */
static int check_own_cert(const fb_node_options *opt, const char *cert_pem, fb_err *err)
{
    gnutls_datum_t pem = {(unsigned char *)cert_pem, (unsigned)strlen(cert_pem)}, der = {NULL, 0};
    if (gnutls_pem_base64_decode2("CERTIFICATE", &pem, &der) < 0)
        return fb_fail(err, "--tls-cert %s holds no PEM certificate", opt->tls_cert);
    fb_ca_verifier *v = NULL;
    int rc = fb_ca_verifier_open(opt->tls_ca, opt->tls_crl, FB_CA_ROLE_BIT(FB_CA_ROLE_NODE), &v, err);
    if (rc == 0) {
        const void *chain[1] = {der.data};
        size_t len[1] = {der.size};
        fb_ca_peer peer;
        char reason[400];
        fb_ca_verdict verdict = fb_ca_verify_chain(v, chain, len, 1, opt->name, &peer, reason, sizeof reason);
        if (verdict != FB_CA_OK)
            rc = fb_fail(err, "--tls-cert %s is not a valid node certificate for \"%s\" from --tls-ca: %s: %s",
                         opt->tls_cert, opt->name, fb_ca_verdict_name(verdict), reason);
        fb_ca_verifier_free(v);
    }
    gnutls_free(der.data);
    return rc;
}

/* The node writes into the gateways' audit chain: it needs their key,
 * copied with the secrets directory (docs/node.md).  Only the first
 * writer of an empty log creates one. */
static int check_audit_key(fb_node *n, fb_err *err)
{
    char path[4096];
    struct stat kst;
    if (snprintf(path, sizeof path, "%s/%s", fb_store_state_dir(n->st), FB_AUDIT_KEY_FILE) >= (int)sizeof path)
        return fb_fail(err, "state directory path too long");
    if (stat(path, &kst) == 0)
        return 0;
    fb_audit_filter f;
    memset(&f, 0, sizeof f);
    f.limit = 1;
    json_t *some = NULL;
    if (fb_audit_query(n->st, &f, &some, err) < 0)
        return -1;
    size_t k = json_array_size(some);
    json_decref(some);
    if (k > 0)
        return fb_fail(err, "no audit key at %s, and the store's audit log has entries: copy audit.key (only "
                            "that file) from a gateway's state directory into the node's --state-dir (docs/node.md)",
                       path);
    fb_log("warn", NULL, "the audit log is empty and this node creates its key: copy audit.key to the gateways",
           json_pack("{s:s}", "path", path));
    return 0;
}

/* /proc/meminfo's MemTotal in MiB (0: unknown). */
static uint64_t host_memory_mib(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return kib / 1024;
}

/* Three quarters of the host's memory for sandboxes; capacity: that over
 * the default sandbox size, at most 8 per CPU, at least 1. */
static void size_node(fb_node *n)
{
    uint64_t mem = host_memory_mib();
    n->memory_mib = mem ? mem * 3 / 4 : n->cfg->sandbox.memory_mib;
    if (n->opt->capacity) {
        n->capacity = n->opt->capacity;
        return;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t by_mem = n->cfg->sandbox.memory_mib ? n->memory_mib / n->cfg->sandbox.memory_mib : 1;
    uint64_t by_cpu = (uint64_t)(cpus > 0 ? cpus : 1) * 8;
    n->capacity = by_mem < by_cpu ? by_mem : by_cpu;
    if (n->capacity == 0)
        n->capacity = 1;
}

static int start_pool(fb_node *n, fb_err *err)
{
    uint64_t size = n->backend == FB_BACKEND_JAIL ? n->cfg->pool.jail_size : n->cfg->pool.vm_size;
    if (size == 0)
        return 0;
    fb_sandbox_config shape;
    fb_sandbox_config_defaults(&shape);
    shape.backend = n->backend;
    shape.tcg_cache_mib = n->cfg->sandbox.vm_tcg_cache_mib;
    shape.memory_mib = n->cfg->sandbox.memory_mib;
    shape.vcpus = n->cfg->sandbox.vcpus;
    shape.disk_mib = n->cfg->sandbox.disk_mib;
    shape.max_output = n->cfg->limits.max_output_bytes;
    shape.image_dir = n->opt->image_dir;
    shape.state_dir = n->cfg->state_dir;
    shape.run_dir = n->cfg->run_dir;
    n->pool = fb_pool_start(&shape, (unsigned)size, err);
    return n->pool ? 0 : -1;
}

/* Destroys every sandbox and marks its record destroyed. */
static void destroy_all(fb_node *n, const char *why)
{
    char (*ids)[NODE_SB_ID_MAX] = NULL;
    size_t k = node_sb_remove_all(n, &ids);
    for (size_t i = 0; i < k; i++) {
        node_record_state(n, ids[i], "destroyed", NULL);
        node_audit(n, "node", "system", ids[i], "destroy", "allowed", why, "", "");
    }
    free(ids);
}

int fb_node_run(const fb_node_options *opt, fb_err *err)
{
    fb_node n;
    memset(&n, 0, sizeof n);
    n.opt = opt;
    n.cfg = opt->cfg;
    n.backend = opt->backend;
    pthread_mutex_init(&n.lock, NULL);
    pthread_cond_init(&n.wake, NULL);
    snprintf(n.name, sizeof n.name, "%s", opt->name);
    snprintf(n.address, sizeof n.address, "%s", opt->advertise ? opt->advertise : opt->listen);
    snprintf(n.isolation, sizeof n.isolation, "%s", n.backend == FB_BACKEND_JAIL ? "namespaces" : "vm");
    if (n.backend == FB_BACKEND_VM) {
        fb_host_caps caps;
        fb_host_probe(&caps);
        snprintf(n.isolation, sizeof n.isolation, "%s", caps.kvm_usable ? "kvm" : "tcg");
    }
    fb_log_set_level(fb_log_level_name(n.cfg->log_level));

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = -1;
    char *cert = NULL, *key = NULL;
    if (n.cfg->limits.request_timeout_s <= NODE_KEEPALIVE_S) {
        fb_fail(err, "limits.request_timeout_s must be above %d s on a node: a quiet exec's stream writes a "
                     "keep-alive line every %d s", NODE_KEEPALIVE_S, NODE_KEEPALIVE_S);
        goto out;
    }
    cert = gw_pem_read(opt->tls_cert, err);
    key = cert ? gw_pem_read(opt->tls_key, err) : NULL;
    if (!key)
        goto out;
    if (check_own_cert(opt, cert, err) < 0)
        goto out;
    if (sodium_init() < 0) {
        fb_fail(err, "libsodium cannot start");
        goto out;
    }
    if (gw_mtls_open(opt->tls_ca, opt->tls_crl, FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY), &n.mtls, err) < 0)
        goto out;
    n.verdicts = nv_cache_new(opt->tls_ca, opt->tls_crl); /* NULL: every request verified */
    if (fb_store_open_url(opt->state_dir, opt->store_url, &n.st, err) < 0 || check_audit_key(&n, err) < 0)
        goto out;
    snprintf(n.id, sizeof n.id, "%s", fb_store_node_id(n.st));
    /* A node commits its heartbeats and every sandbox's audit entries to
     * the store as a gateway does: on SQLite its write-ahead log is
     * preallocated the same way (fb_store_preallocate_log). */
    fb_err perr = {{0}};
    if (fb_store_preallocate_log(n.st, &perr) < 0)
        fb_log("warn", NULL, "cannot preallocate the store's write-ahead log (commits stay correct, only slower)",
               json_pack("{s:s}", "error", perr.msg));
    size_node(&n);
    /* What a previous process of this node left behind: its sandboxes'
     * processes died with it (parent-death signal); their runtime files
     * and cgroups go now, their records at registration. */
    fb_sandbox_reap_orphans(n.cfg->run_dir);
    if (node_register(&n, false, err) < 0)
        goto out;
    if (start_pool(&n, err) < 0 || node_server_start(&n, cert, key, err) < 0 || node_reaper_start(&n, err) < 0 ||
        node_heartbeat_start(&n, err) < 0) {
        node_reaper_stop(&n);
        node_server_stop(&n);
        fb_pool_stop(n.pool);
        fb_err e2 = {{0}};
        fb_store_node_stop(n.st, n.id, &e2);
        goto out;
    }
    fb_log("info", NULL, "forgebox node listening",
           json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", n.id, "name", n.name, "listen", opt->listen, "backend",
                     fb_backend_name(n.backend), "capacity", (json_int_t)n.capacity));

    int sig = 0;
    sigwait(&sigs, &sig);
    fb_log("info", NULL, "node shutting down", json_pack("{s:i}", "signal", sig));
    node_server_quiesce(&n);
    pthread_mutex_lock(&n.lock);
    n.stopping = true; /* no new sandbox from here */
    pthread_cond_broadcast(&n.wake);
    pthread_mutex_unlock(&n.lock);
    node_heartbeat_stop(&n);
    node_reaper_stop(&n);
    destroy_all(&n, "the node stopped");
    node_server_stop(&n);
    destroy_all(&n, "the node stopped"); /* any that a request booted meanwhile */
    fb_pool_stop(n.pool);
    fb_err e2 = {{0}};
    if (fb_store_node_stop(n.st, n.id, &e2) < 0)
        fb_log("error", NULL, "cannot mark the node stopped", json_pack("{s:s}", "error", e2.msg));
    node_audit(&n, "node", "system", n.name, "stop", "allowed", "signal", "", "");
    rc = 0;
out:
    if (n.st)
        fb_store_close(n.st);
    gw_mtls_free(n.mtls);
    nv_cache_free(n.verdicts);
    gw_pem_free_secret(key);
    free(cert);
    return rc;
}

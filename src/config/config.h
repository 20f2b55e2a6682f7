/*
 * config.h - the gateway's configuration (`forgebox serve`).
 *
 * Four layers, each overriding the one before it:
 *
 *     compiled defaults  <  forgebox.yaml  <  FORGEBOX_* variables  <  flags
 *
 * The caller drives the layers in that order:
 *
 *     fb_config cfg;
 *     bool required;
 *     const char *path = fb_config_path(flag_config, envp, &required);
 *     if (fb_config_defaults(&cfg) < 0
 *         || fb_config_load_file(&cfg, path, required, &err) < 0
 *         || fb_config_apply_env(&cfg, envp, &err) < 0
 *         || fb_config_set(&cfg, "listen", flag_listen, "--listen", &err) < 0
 *         || fb_config_validate(&cfg, &err) < 0)
 *         die(err.msg);    // one line: "config: KEY (SOURCE): REASON"
 *
 * Every key has one dotted name ("limits.rate_rps"), which is its YAML path,
 * its environment variable (FORGEBOX_LIMITS_RATE_RPS) and the key flags pass
 * to fb_config_set.  Each layer checks the type and range of every value it
 * sets; fb_config_validate adds the checks that involve several keys or the
 * filesystem (tls.cert/tls.key both or neither and readable, ttl_s <=
 * max_ttl_s, ...).  Any failure leaves a message naming the key, where the
 * bad value came from (a file:line, an environment variable, a flag) and why.
 * A failed call may leave cfg half-updated: start-up is expected to stop.
 *
 * docs/configuration.md lists every key, its default and its range.
 */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"
#include "llm/llm.h"
#include "policy/policy.h"
#include "sandbox/sandbox.h"

typedef enum {
    FB_LOG_DEBUG = 0,
    FB_LOG_INFO,
    FB_LOG_WARN,
    FB_LOG_ERROR,
} fb_log_level;

/* Used when neither --config nor FORGEBOX_CONFIG names a file; a missing
 * file there is fine (compiled defaults apply). */
#define FB_CONFIG_DEFAULT_PATH "/etc/forgebox/forgebox.yaml"
/* forgebox.yaml larger than this is refused. */
#define FB_CONFIG_MAX_FILE_BYTES (1024 * 1024)
/* Longest value any key accepts, after ${VAR} interpolation. */
#define FB_CONFIG_MAX_VALUE 3000
/* Number of keys (the size of the bookkeeping arrays below). */
#define FB_CONFIG_NKEYS 59

/* Most providers one file may define. */
#define FB_CONFIG_MAX_PROVIDERS 64

/* One entry of the providers: mapping (forgebox.yaml only: a mapping of
 * names has no FORGEBOX_* form).  name is [a-z0-9_-]{1,64}; base_url is
 * http(s) (fb_llm_url_allowed); api_key is NULL when the provider takes
 * none, always shown as "[redacted]" and wiped when freed. */
typedef struct fb_config_provider {
    char *name;
    fb_llm_kind kind;
    char *base_url;
    char *api_key;
    uint64_t timeout_s;       /* idle timeout; 0: FB_LLM_DEFAULT_TIMEOUT_S */
    uint64_t max_retries;
    bool max_retries_set;     /* false: FB_LLM_DEFAULT_MAX_RETRIES */
    char *src;                /* "PATH:LINE" of its name, for messages */
} fb_config_provider;

/* One entry of network.hosts (forgebox.yaml only). */
#define FB_CONFIG_MAX_HOSTS 64
#define FB_CONFIG_MAX_HOST_ADDRS 8
typedef struct fb_config_host {
    char *name;                            /* canonical host name */
    char *addrs[FB_CONFIG_MAX_HOST_ADDRS]; /* numeric, no port */
    size_t naddrs;
} fb_config_host;

/* nodes.mode: where a gateway's sandboxes run. */
typedef enum { FB_NODES_LOCAL = 0, FB_NODES_REMOTE = 1 } fb_nodes_mode;

typedef struct fb_config {
    char *listen;             /* "host:port" or "[v6addr]:port" */
    char *state_dir;          /* absolute */
    struct {
        /* NULL: SQLite under state_dir; else sqlite:// or postgresql://
         * (src/store/store.h).  Its password is never shown (the dump
         * says "[redacted]" in its place) and wiped when freed. */
        char *url;
    } store;
    char *run_dir;            /* absolute */
    char *image_dir;          /* absolute, or NULL: the CLI decides */
    fb_log_level log_level;
    struct {
        char *cert;           /* NULL: plain HTTP; set with key */
        char *key;
        char *client_ca;      /* NULL: no client certificates; else mutual TLS, TLS 1.3 only */
        char *client_crl;     /* NULL: no revocation list */
        uint64_t client_roles;/* roles a client certificate may carry: FB_CA_ROLE_BIT()s (src/ca) */
    } tls;
    struct {
        fb_backend_kind backend;
        uint64_t memory_mib;      /* default for a new sandbox */
        uint64_t vcpus;
        uint64_t disk_mib;
        uint64_t ttl_s;           /* default lifetime of a sandbox */
        uint64_t max_ttl_s;       /* most a request may ask for */
        uint64_t max_memory_mib;  /* most a request may ask for */
        uint64_t max_vcpus;       /* most a request may ask for */
        bool vm_snapshot;         /* VMs start from a snapshot of their shape (snapshot.h) */
        uint64_t vm_tcg_cache_mib;/* a VM under TCG: its translation cache (vm.c) */
    } sandbox;
    struct {
        uint64_t jail_size;       /* pool.jail.size: warm jails of the default shape (0: none) */
        uint64_t vm_size;         /* pool.vm.size: warm VMs of the default shape (0: none) */
    } pool;
    struct {
        fb_egress_list allow;     /* the ceiling of gateway grants (empty: none) */
        fb_egress_list deny;      /* always wins, also for forgebox run */
        fb_egress_addr allow_private[FB_EGRESS_MAX_ENTRIES]; /* exact address:port */
        size_t nallow_private;
        fb_config_host *hosts;    /* names answered without DNS */
        size_t nhosts;
        char *dns_servers;        /* c-ares "ip[:port],..."; NULL: /etc/resolv.conf */
    } network;
    struct {
        uint64_t max_body_bytes;
        uint64_t max_header_bytes;
        uint64_t max_file_bytes;
        uint64_t max_output_bytes;
        uint64_t rate_rps;
        uint64_t rate_burst;
        uint64_t max_connections;
        uint64_t request_timeout_s;
        uint64_t exec_reattach_s; /* a streamed exec outlives its client this long */
    } limits;
    struct {
        uint64_t max_sandboxes_per_team;
        uint64_t max_memory_mib_per_team;
        uint64_t max_vcpus_per_team;  /* vCPUs of a team's live sandboxes */
    } quotas;
    struct {                      /* tasks (src/config/tasks.c, docs/configuration.md) */
        uint64_t default_max_turns, default_max_tokens, default_max_tool_calls, default_timeout_s;
        uint64_t max_turns, max_tokens, max_tool_calls, max_timeout_s; /* what a request may ask */
        fb_toolset require_approval;  /* tools whose calls always wait for a person */
        bool self_approval;           /* a task's creator may approve its calls */
        uint64_t approval_timeout_s;  /* an undecided approval is denied after this */
        uint64_t ttl_s;               /* a succeeded task's sandbox is kept this long */
        uint64_t max_running;         /* tasks running at once on this node; more wait queued */
    } tasks;
    struct {
        char *listen;             /* the E2B-compatible listener's "host:port"; NULL: off */
    } e2b;
    struct {                      /* several hosts (docs/deployment.md, docs/node-api.md) */
        fb_nodes_mode mode;       /* local: this gateway runs sandboxes; remote: nodes do */
        uint64_t heartbeat_s;     /* a node writes its heartbeat this often */
        uint64_t down_after_s;    /* a node silent this long is down, its sandboxes lost */
        char *tls_cert;           /* the gateway's client certificate toward nodes (role gateway) */
        char *tls_key;
        char *tls_ca;             /* the organisation CA a node's certificate must chain to */
        char *tls_crl;            /* NULL: no revocation list */
    } nodes;
    struct {                      /* the admin console's sessions (src/core/sessions.c) */
        uint64_t session_ttl_s;         /* a login lasts this long */
        uint64_t max_sessions_per_user; /* a new login beyond it ends the oldest */
        uint64_t max_login_failures;    /* per user, and 4x per address, in 15 minutes */
    } console;
    fb_config_provider *providers;  /* in file order */
    size_t nproviders;

    /* Bookkeeping, private to config.c: where each key's value came from
     * (NULL: compiled default) and whether the value was built from a
     * secret-looking ${VAR} and so must never be shown. */
    char *src_[FB_CONFIG_NKEYS];
    bool redact_[FB_CONFIG_NKEYS];
} fb_config;

/* Fills cfg with the compiled defaults (whatever was in it is ignored, not
 * freed).  Returns -1 only when out of memory. */
int fb_config_defaults(fb_config *cfg);

/* Which file to read: flag (--config) if not NULL, else FORGEBOX_CONFIG from
 * envp if set and non-empty, else FB_CONFIG_DEFAULT_PATH.  *required is true
 * for the first two (an explicitly named file must exist).  The result
 * points into flag, envp or a constant. */
const char *fb_config_path(const char *flag, char *const *envp, bool *required);

/* Applies a forgebox.yaml.  A missing file is an error only when required;
 * any other problem (unreadable, too big, YAML syntax, unknown or duplicate
 * key, bad value, unset ${VAR}) always is.  String values may use ${VAR}
 * (from this process's environment); $${ is a literal ${. */
int fb_config_load_file(fb_config *cfg, const char *path, bool required, fb_err *err);

/* Applies FORGEBOX_<KEY> variables from envp (NULL-terminated "NAME=VALUE").
 * Values are taken literally (no ${VAR}).  A FORGEBOX_ variable that is
 * no key but looks like a misspelt one (under a section prefix such as
 * FORGEBOX_LIMITS_, or close to a key's name) is an error; other FORGEBOX_
 * variables (FORGEBOX_CONFIG, FORGEBOX_TRACE, FORGEBOX_IMAGE, ...) belong to
 * other parts of ForgeBox and are left alone. */
int fb_config_apply_env(fb_config *cfg, char *const *envp, fb_err *err);

/* Sets one key from text, as a flag does: key is the dotted name, value is
 * taken literally, source names it in messages ("--listen").  For keys that
 * may be unset (image_dir, tls.*), an empty value unsets. */
int fb_config_set(fb_config *cfg, const char *key, const char *value, const char *source,
                  fb_err *err);

/* The checks that involve several keys or the filesystem. */
int fb_config_validate(const fb_config *cfg, fb_err *err);

/* The effective configuration as a JSON object (nested like the YAML), for
 * the start-up log line; malloc'd, NULL when out of memory.  Values built
 * from ${VAR}s whose names contain KEY, TOKEN, SECRET or PASSWORD (any
 * case) appear as "[redacted]". */
char *fb_config_dump_json(const fb_config *cfg);

/* Where key's value came from: "default", "PATH:LINE", "FORGEBOX_..." or a
 * flag's source text; NULL for an unknown key. */
const char *fb_config_source(const fb_config *cfg, const char *key);

/* Splits a validated listen value into host (without brackets) and port. */
int fb_config_listen_split(const char *listen, char *host, size_t host_cap, uint16_t *port,
                           fb_err *err);

const char *fb_log_level_name(fb_log_level level);

/* The provider called name, or NULL. */
const fb_config_provider *fb_config_provider_find(const fb_config *cfg, const char *name);
/* The options fb_llm_provider_new takes for p (pointing into p). */
fb_llm_provider_opts fb_config_provider_opts(const fb_config_provider *p);

/* Frees every string cfg owns; cfg may then be reused with
 * fb_config_defaults.  Safe to call twice. */
void fb_config_free(fb_config *cfg);

#endif

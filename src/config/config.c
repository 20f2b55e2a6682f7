/*
 * config.c - see config.h.  This file is the key table and what is done
 * with one value: parse, range-check, store, show, dump.  Loading a
 * forgebox.yaml is yaml.c; the environment and the checks across keys are
 * env.c; what they share is internal.h.
 *
 * One table (cfg_keys below) describes every key: its dotted name, its
 * type, where it lives in fb_config and its range.  The YAML walker, the
 * environment scan, fb_config_set and the JSON dump all go through that
 * table, so a key cannot be settable one way and missing another, and the
 * environment name is always derived from the dotted name rather than kept
 * in a second list that could drift.
 *
 * Every value passes through cfg_set_value(), which parses and range-checks
 * it before anything is stored, and records where it came from.  The source
 * travels with the value so that checks made later (fb_config_validate) can
 * still say "tls.cert (forgebox.yaml:7)".
 *
 * Secrets: a value built from a ${VAR} whose name looks secret (KEY, TOKEN,
 * SECRET, PASSWORD) is marked; the mark keeps the value out of the JSON dump
 * and out of every error message, which then says what was wrong without
 * echoing the value.  Values are otherwise echoed quoted, with control bytes
 * escaped and length capped, so a hostile byte cannot forge a log line.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ca/ca.h"
#include "config/internal.h"

/* ---- the key table ------------------------------------------------------ */

#define OFF(field) offsetof(fb_config, field)

const struct cfg_key cfg_keys[] = {
    {"listen", K_LISTEN, OFF(listen), false, 0, 0},
    {"state_dir", K_PATH, OFF(state_dir), false, 0, 0},
    {"store.url", K_URL, OFF(store.url), true, 0, 0},
    {"run_dir", K_PATH, OFF(run_dir), false, 0, 0},
    {"image_dir", K_PATH, OFF(image_dir), true, 0, 0},
    {"log_level", K_LOGLEVEL, OFF(log_level), false, 0, 0},
    {"tls.cert", K_PATH, OFF(tls.cert), true, 0, 0},
    {"tls.key", K_PATH, OFF(tls.key), true, 0, 0},
    /* Mutual TLS (src/ca, docs/certificates.md). */
    {"tls.client_ca", K_PATH, OFF(tls.client_ca), true, 0, 0},
    {"tls.client_crl", K_PATH, OFF(tls.client_crl), true, 0, 0},
    {"tls.client_roles", K_ROLES, OFF(tls.client_roles), false, 0, 0},
    {"sandbox.backend", K_BACKEND, OFF(sandbox.backend), false, 0, 0},
    {"sandbox.memory_mib", K_UINT, OFF(sandbox.memory_mib), false, FB_MIN_MEMORY_MIB, FB_MAX_MEMORY_MIB},
    {"sandbox.vcpus", K_UINT, OFF(sandbox.vcpus), false, 1, FB_MAX_VCPUS},
    {"sandbox.disk_mib", K_UINT, OFF(sandbox.disk_mib), false, 1, FB_MAX_DISK_MIB},
    {"sandbox.ttl_s", K_UINT, OFF(sandbox.ttl_s), false, 1, 7 * 86400},
    {"sandbox.max_ttl_s", K_UINT, OFF(sandbox.max_ttl_s), false, 1, 7 * 86400},
    {"sandbox.max_memory_mib", K_UINT, OFF(sandbox.max_memory_mib), false, FB_MIN_MEMORY_MIB, FB_MAX_MEMORY_MIB},
    {"sandbox.max_vcpus", K_UINT, OFF(sandbox.max_vcpus), false, 1, FB_MAX_VCPUS},
    /* VM snapshot restore (src/sandbox/snapshot.h): on unless set false. */
    {"sandbox.vm_snapshot", K_BOOL, OFF(sandbox.vm_snapshot), false, 0, 0},
    /* A VM under TCG: its translation cache, density against speed (vm.c). */
    {"sandbox.vm_tcg_cache_mib", K_UINT, OFF(sandbox.vm_tcg_cache_mib), false, FB_MIN_TCG_CACHE_MIB,
     FB_MAX_TCG_CACHE_MIB},
    /* The warm pools (src/sandbox/pool.h): off unless set. */
    {"pool.jail.size", K_UINT, OFF(pool.jail_size), false, 0, 1024},
    {"pool.vm.size", K_UINT, OFF(pool.vm_size), false, 0, 1024},
    {"limits.max_body_bytes", K_SIZE, OFF(limits.max_body_bytes), false, 1 * KIB, 64 * MIB},
    {"limits.max_header_bytes", K_SIZE, OFF(limits.max_header_bytes), false, 1 * KIB, 1 * MIB},
    {"limits.max_file_bytes", K_SIZE, OFF(limits.max_file_bytes), false, 1, 1 * GIB},
    {"limits.max_output_bytes", K_SIZE, OFF(limits.max_output_bytes), false, 1, 1 * GIB},
    {"limits.rate_rps", K_UINT, OFF(limits.rate_rps), false, 1, 100000},
    {"limits.rate_burst", K_UINT, OFF(limits.rate_burst), false, 1, 1000000},
    {"limits.max_connections", K_UINT, OFF(limits.max_connections), false, 1, 65536},
    {"limits.request_timeout_s", K_UINT, OFF(limits.request_timeout_s), false, 1, 3600},
    {"limits.exec_reattach_s", K_UINT, OFF(limits.exec_reattach_s), false, 0, 3600},
    {"quotas.max_sandboxes_per_team", K_UINT, OFF(quotas.max_sandboxes_per_team), false, 1, 100000},
    {"quotas.max_memory_mib_per_team", K_UINT, OFF(quotas.max_memory_mib_per_team), false, FB_MIN_MEMORY_MIB, 16ull * 1024 * 1024},
    {"quotas.max_vcpus_per_team", K_UINT, OFF(quotas.max_vcpus_per_team), false, 1, 1000000},
    {"tasks.default_max_turns", K_UINT, OFF(tasks.default_max_turns), false, 1, 10000},
    {"tasks.default_max_tokens", K_UINT, OFF(tasks.default_max_tokens), false, 1, 1000000000},
    {"tasks.default_max_tool_calls", K_UINT, OFF(tasks.default_max_tool_calls), false, 1, 100000},
    {"tasks.default_timeout_s", K_UINT, OFF(tasks.default_timeout_s), false, 1, 7 * 86400},
    {"tasks.max_turns", K_UINT, OFF(tasks.max_turns), false, 1, 10000},
    {"tasks.max_tokens", K_UINT, OFF(tasks.max_tokens), false, 1, 1000000000},
    {"tasks.max_tool_calls", K_UINT, OFF(tasks.max_tool_calls), false, 1, 100000},
    {"tasks.max_timeout_s", K_UINT, OFF(tasks.max_timeout_s), false, 1, 7 * 86400},
    {"tasks.require_approval", K_TOOLS, OFF(tasks.require_approval), false, 0, 0},
    {"tasks.self_approval", K_BOOL, OFF(tasks.self_approval), false, 0, 0},
    {"tasks.approval_timeout_s", K_UINT, OFF(tasks.approval_timeout_s), false, 1, 7 * 86400},
    {"tasks.ttl_s", K_UINT, OFF(tasks.ttl_s), false, 0, 7 * 86400},
    {"tasks.max_running", K_UINT, OFF(tasks.max_running), false, 1, 10000},
    /* The E2B-compatible listener (src/compat/e2b): off unless set. */
    {"e2b.listen", K_LISTEN, OFF(e2b.listen), true, 0, 0},
    {"console.session_ttl_s", K_UINT, OFF(console.session_ttl_s), false, 1, 30 * 86400},
    {"console.max_sessions_per_user", K_UINT, OFF(console.max_sessions_per_user), false, 1, 1000},
    {"console.max_login_failures", K_UINT, OFF(console.max_login_failures), false, 1, 1000},
    /* Several hosts (docs/deployment.md): gateways in remote mode place
     * sandboxes on `forgebox node`s over mutual TLS. */
    {"nodes.mode", K_NODEMODE, OFF(nodes.mode), false, 0, 0},
    {"nodes.heartbeat_s", K_UINT, OFF(nodes.heartbeat_s), false, 1, 3600},
    {"nodes.down_after_s", K_UINT, OFF(nodes.down_after_s), false, 2, 86400},
    {"nodes.tls_cert", K_PATH, OFF(nodes.tls_cert), true, 0, 0},
    {"nodes.tls_key", K_PATH, OFF(nodes.tls_key), true, 0, 0},
    {"nodes.tls_ca", K_PATH, OFF(nodes.tls_ca), true, 0, 0},
    {"nodes.tls_crl", K_PATH, OFF(nodes.tls_crl), true, 0, 0},
};

_Static_assert(sizeof cfg_keys / sizeof cfg_keys[0] == FB_CONFIG_NKEYS,
               "FB_CONFIG_NKEYS in config.h must match the key table");

const char *const cfg_sections[] = {"store", "tls", "sandbox", "network", "limits", "quotas",
                                    "tasks", "e2b",  "console", "pool",    "pool.jail", "pool.vm", "nodes"};

/* FORGEBOX_ variables that belong to other parts of ForgeBox (the CLI, the
 * image build, the test harness); never reported as misspelt keys. */
const char *const cfg_foreign_env[] = {
    "FORGEBOX_CONFIG", "FORGEBOX_TRACE", "FORGEBOX_IMAGE", "FORGEBOX_IMAGE_CACHE",
    "FORGEBOX_BIN", "FORGEBOX_APT_SOURCES", "FORGEBOX_VERSION",
    /* a client's mutual-TLS identity (src/ca/client.c) */
    "FORGEBOX_CLIENT_CERT", "FORGEBOX_CLIENT_KEY", "FORGEBOX_CLIENT_CA", "FORGEBOX_CLIENT_CRL",
};
const size_t cfg_nforeign_env = sizeof cfg_foreign_env / sizeof cfg_foreign_env[0];
const size_t cfg_nsections = sizeof cfg_sections / sizeof cfg_sections[0];


static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *fb_log_level_name(fb_log_level level)
{
    if ((unsigned)level < sizeof level_names / sizeof level_names[0])
        return level_names[level];
    return "?";
}

const struct cfg_key *cfg_find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(cfg_keys[i].name, name) == 0)
            return &cfg_keys[i];
    return NULL;
}

size_t cfg_key_index(const struct cfg_key *k)
{
    return (size_t)(k - cfg_keys);
}

bool cfg_is_section(const char *name)
{
    for (size_t i = 0; i < cfg_nsections; i++)
        if (strcmp(cfg_sections[i], name) == 0)
            return true;
    return false;
}

/* "limits.rate_rps" -> "FORGEBOX_LIMITS_RATE_RPS" */
void cfg_env_name(const struct cfg_key *k, char *out, size_t cap)
{
    size_t n = strlen(ENV_PREFIX);
    memcpy(out, ENV_PREFIX, n);
    for (const char *p = k->name; *p && n + 1 < cap; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

/* ---- messages ----------------------------------------------------------- */

/* A value as messages show it: quoted, control bytes escaped, capped. */
void cfg_show_value(const char *v, bool redact, char *out, size_t cap)
{
    if (redact) {
        snprintf(out, cap, "a value built from a secret variable (not shown)");
        return;
    }
    size_t n = 0;
    const size_t limit = 64;
    out[n++] = '"';
    size_t i = 0;
    for (; v[i] && i < limit && n + 8 < cap; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == '"' || c == '\\') {
            out[n++] = '\\';
            out[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        } else {
            out[n++] = (char)c;
        }
    }
    out[n++] = '"';
    out[n] = '\0';
    if (v[i] && n + 4 < cap)
        memcpy(out + n, "...", 4);
}

/* "config: KEY (SOURCE): REASON, got VALUE" */
static int cfg_fail_value(fb_err *err, const struct cfg_key *k, const char *source, const char *value,
                      bool redact, const char *reason)
{
    char shown[300];
    cfg_show_value(value, redact, shown, sizeof shown);
    return fb_fail(err, "config: %s (%s): %s, got %s", k->name, source, reason, shown);
}

/* Human form of a byte count for range messages: "64 MiB", "1000 bytes". */
static void fmt_size(uint64_t v, char *out, size_t cap)
{
    if (v >= GIB && v % GIB == 0)
        snprintf(out, cap, "%llu GiB", (unsigned long long)(v / GIB));
    else if (v >= MIB && v % MIB == 0)
        snprintf(out, cap, "%llu MiB", (unsigned long long)(v / MIB));
    else if (v >= KIB && v % KIB == 0)
        snprintf(out, cap, "%llu KiB", (unsigned long long)(v / KIB));
    else
        snprintf(out, cap, "%llu byte%s", (unsigned long long)v, v == 1 ? "" : "s");
}

/* Edit distance, for "did you mean"; inputs are short names. */
size_t cfg_edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAX_NAME || lb > MAX_NAME)
        return SIZE_MAX;
    size_t prev[MAX_NAME + 1], cur[MAX_NAME + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

/* The key an unknown name most likely meant, or NULL.  A bare leaf name
 * that exists under some section ("rate_rps") suggests that key. */
static const char *suggest_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        const char *dot = strchr(cfg_keys[i].name, '.');
        if (dot && strcmp(dot + 1, name) == 0)
            return cfg_keys[i].name;
    }
    const char *best = NULL;
    size_t best_d = 3; /* at most 2 edits */
    for (size_t i = 0; i < NKEYS + cfg_nsections; i++) {
        const char *cand = i < NKEYS ? cfg_keys[i].name : cfg_sections[i - NKEYS];
        size_t d = cfg_edit_distance(name, cand);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    return best;
}

int cfg_fail_unknown(fb_err *err, const char *name, const char *source)
{
    const char *s = suggest_key(name);
    char shown[300];
    cfg_show_value(name, false, shown, sizeof shown);
    if (s)
        return fb_fail(err, "config: %s (%s): unknown key; did you mean %s?", shown, source, s);
    return fb_fail(err, "config: %s (%s): unknown key (docs/configuration.md lists them all)",
                   shown, source);
}

/* ---- parsing one value -------------------------------------------------- */

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* "1048576", "1024 KiB", "64MiB", "1GiB". */
static int parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    char digits[32];
    size_t n = 0;
    while (s[n] >= '0' && s[n] <= '9') {
        if (n + 1 >= sizeof digits)
            return -1;
        digits[n] = s[n];
        n++;
    }
    digits[n] = '\0';
    const char *unit = s + n;
    if (*unit == ' ')
        unit++;
    uint64_t mult;
    if (*unit == '\0' && unit == s + n)
        mult = 1;
    else if (strcmp(unit, "KiB") == 0)
        mult = KIB;
    else if (strcmp(unit, "MiB") == 0)
        mult = MIB;
    else if (strcmp(unit, "GiB") == 0)
        mult = GIB;
    else
        return -1;
    uint64_t v;
    if (fb_parse_u64(digits, 0, UINT64_MAX / mult, &v) < 0)
        return -1;
    v *= mult;
    if (v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static bool valid_host_char(char c, bool bracketed)
{
    if (isalnum((unsigned char)c) || c == '.' || c == '-')
        return true;
    return bracketed && (c == ':' || c == '%' || c == '_');
}

int fb_config_listen_split(const char *listen, char *host, size_t host_cap, uint16_t *port,
                           fb_err *err)
{
    const char *why = "must be HOST:PORT or [IPV6]:PORT with a port between 1 and 65535";
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return fb_fail(err, "%s", why);
    const char *h = listen, *hend = colon;
    bool bracketed = listen[0] == '[';
    if (bracketed) {
        if (hend - h < 3 || hend[-1] != ']')
            return fb_fail(err, "%s", why);
        h++;
        hend--;
    }
    for (const char *p = h; p < hend; p++)
        if (!valid_host_char(*p, bracketed))
            return fb_fail(err, "%s", why);
    uint64_t v;
    if (fb_parse_u64(colon + 1, 1, 65535, &v) < 0)
        return fb_fail(err, "%s", why);
    size_t hlen = (size_t)(hend - h);
    if (host) {
        if (hlen + 1 > host_cap)
            return fb_fail(err, "host name longer than %zu bytes", host_cap - 1);
        memcpy(host, h, hlen);
        host[hlen] = '\0';
    }
    if (port)
        *port = (uint16_t)v;
    return 0;
}

/* store.url: a scheme we know and no control characters. */
static bool valid_store_url(const char *s)
{
    if (strncmp(s, "sqlite://", 9) != 0 && strncmp(s, "postgresql://", 13) != 0 && strncmp(s, "postgres://", 11) != 0)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Frees a string value, wiping it first (a store URL carries a password). */
static void free_string(char *s)
{
    if (s)
        explicit_bzero(s, strlen(s));
    free(s);
}

/* A store URL for the dump: "scheme://user:[redacted]@host..." when it
 * carries a password (user:password@ before the host). */
static json_t *url_shown(const char *url)
{
    if (!url)
        return json_null();
    const char *auth = strstr(url, "://");
    auth = auth ? auth + 3 : url;
    const char *at = strchr(auth, '@');
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    if (!colon)
        return json_string(url);
    char *shown = NULL;
    if (asprintf(&shown, "%.*s:[redacted]%s", (int)(colon - url), url, at) < 0)
        return NULL;
    json_t *v = json_string(shown);
    free(shown);
    return v;
}

static bool valid_abs_path(const char *s)
{
    if (s[0] != '/' || strlen(s) > FB_CONFIG_MAX_VALUE)
        return false;
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

/* Parses value for key k and, only if it is valid, stores it along with
 * where it came from. */
int cfg_set_value(fb_config *cfg, const struct cfg_key *k, const char *value, const char *source,
                     bool redact, fb_err *err)
{
    char reason[160];
    char *dup = NULL;
    union {
        uint64_t u;
        bool b;
        int e;
        fb_toolset t;
    } parsed = {0};

    if (strlen(value) > FB_CONFIG_MAX_VALUE)
        return fb_fail(err, "config: %s (%s): longer than %d bytes", k->name, source,
                       FB_CONFIG_MAX_VALUE);

    switch (k->type) {
    case K_LISTEN:
        if (k->optional && value[0] == '\0')
            break;
        if (fb_config_listen_split(value, NULL, 0, NULL, NULL) < 0)
            return cfg_fail_value(err, k, source, value, redact,
                              "must be HOST:PORT or [IPV6]:PORT with a port between 1 and 65535");
        break;
    case K_PATH:
        if (k->optional && value[0] == '\0')
            break;
        if (!valid_abs_path(value))
            return cfg_fail_value(err, k, source, value, redact,
                              "must be an absolute path without control characters");
        break;
    case K_LOGLEVEL:
        parsed.e = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(value, level_names[i]) == 0)
                parsed.e = i;
        if (parsed.e < 0)
            return cfg_fail_value(err, k, source, value, redact, "must be debug, info, warn or error");
        break;
    case K_NODEMODE:
        if (strcasecmp(value, "local") == 0)
            parsed.e = FB_NODES_LOCAL;
        else if (strcasecmp(value, "remote") == 0)
            parsed.e = FB_NODES_REMOTE;
        else
            return cfg_fail_value(err, k, source, value, redact, "must be local or remote");
        break;
    case K_BACKEND:
        if (strcasecmp(value, "vm") == 0)
            parsed.e = FB_BACKEND_VM;
        else if (strcasecmp(value, "jail") == 0)
            parsed.e = FB_BACKEND_JAIL;
        else
            return cfg_fail_value(err, k, source, value, redact, "must be vm or jail");
        break;
    case K_UINT:
        if (fb_parse_u64(value, k->min, k->max, &parsed.u) < 0) {
            snprintf(reason, sizeof reason, "must be an integer between %llu and %llu",
                     (unsigned long long)k->min, (unsigned long long)k->max);
            return cfg_fail_value(err, k, source, value, redact, reason);
        }
        break;
    case K_SIZE:
        if (parse_size(value, k->min, k->max, &parsed.u) < 0) {
            char lo[32], hi[32];
            fmt_size(k->min, lo, sizeof lo);
            fmt_size(k->max, hi, sizeof hi);
            snprintf(reason, sizeof reason,
                     "must be a size between %s and %s (bytes, or a number with KiB, MiB or GiB)",
                     lo, hi);
            return cfg_fail_value(err, k, source, value, redact, reason);
        }
        break;
    case K_BOOL:
        if (!parse_bool(value, &parsed.b))
            return cfg_fail_value(err, k, source, value, redact, "must be true or false");
        break;
    case K_TOOLS:
        if (cfg_parse_tools(value, &parsed.t, reason, sizeof reason) < 0)
            return cfg_fail_value(err, k, source, value, redact, reason);
        break;
    case K_ROLES: {
        unsigned set = 0;
        if (fb_ca_roles_parse(value, &set, reason, sizeof reason) < 0)
            return cfg_fail_value(err, k, source, value, redact, reason);
        parsed.u = set;
        break;
    }
    case K_URL: /* never echoed: it may carry the database password */
        if (value[0] != '\0' && !valid_store_url(value))
            return cfg_fail_value(err, k, source, value, true,
                                  "must be sqlite:///STATE_DIR/forgebox.db or "
                                  "postgresql://USER:PASSWORD@HOST:PORT/DATABASE");
        break;
    }

    char *src = strdup(source);
    if (!src)
        return fb_fail(err, "config: out of memory");
    if (k->type == K_LISTEN || k->type == K_PATH || k->type == K_URL) {
        if (value[0] != '\0' && !(dup = strdup(value))) {
            free(src);
            return fb_fail(err, "config: out of memory");
        }
        char **slot = FIELD(cfg, k, char *);
        free_string(*slot);
        *slot = dup;
    } else if (k->type == K_LOGLEVEL) {
        *FIELD(cfg, k, fb_log_level) = (fb_log_level)parsed.e;
    } else if (k->type == K_BACKEND) {
        *FIELD(cfg, k, fb_backend_kind) = (fb_backend_kind)parsed.e;
    } else if (k->type == K_NODEMODE) {
        *FIELD(cfg, k, fb_nodes_mode) = (fb_nodes_mode)parsed.e;
    } else if (k->type == K_BOOL) {
        *FIELD(cfg, k, bool) = parsed.b;
    } else if (k->type == K_TOOLS) {
        *FIELD(cfg, k, fb_toolset) = parsed.t;
    } else {
        *FIELD(cfg, k, uint64_t) = parsed.u;
    }
    size_t i = cfg_key_index(k);
    free(cfg->src_[i]);
    cfg->src_[i] = src;
    cfg->redact_[i] = redact;
    return 0;
}

/* ---- defaults, set, free ------------------------------------------------ */

int fb_config_defaults(fb_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = strdup("127.0.0.1:8420");
    cfg->state_dir = strdup("/var/lib/forgebox");
    cfg->run_dir = strdup("/run/forgebox");
    cfg->log_level = FB_LOG_INFO;
    cfg->tls.client_roles = FB_CA_ROLE_BIT(FB_CA_ROLE_GATEWAY);
    cfg->sandbox.backend = FB_BACKEND_VM;
    cfg->sandbox.memory_mib = 512;
    cfg->sandbox.vcpus = 1;
    cfg->sandbox.disk_mib = 256;
    cfg->sandbox.ttl_s = 600;
    cfg->sandbox.max_ttl_s = 3600;
    cfg->sandbox.max_memory_mib = 4096;
    cfg->sandbox.max_vcpus = 8;
    cfg->sandbox.vm_snapshot = true;
    cfg->sandbox.vm_tcg_cache_mib = FB_DEFAULT_TCG_CACHE_MIB;
    cfg->limits.max_body_bytes = 1 * MIB;
    cfg->limits.max_header_bytes = 16 * KIB;
    cfg->limits.max_file_bytes = 64 * MIB;
    cfg->limits.max_output_bytes = 8 * MIB;
    cfg->limits.rate_rps = 10;
    cfg->limits.rate_burst = 20;
    cfg->limits.max_connections = 256;
    cfg->limits.request_timeout_s = 30;
    cfg->limits.exec_reattach_s = 10;
    cfg->console.session_ttl_s = 8 * 3600;
    cfg->console.max_sessions_per_user = 5;
    cfg->console.max_login_failures = 5;
    cfg->quotas.max_sandboxes_per_team = 10;
    cfg->quotas.max_memory_mib_per_team = 8192;
    cfg->quotas.max_vcpus_per_team = 32;
    cfg_tasks_defaults(cfg);
    cfg->nodes.mode = FB_NODES_LOCAL;
    cfg->nodes.heartbeat_s = 2;
    cfg->nodes.down_after_s = 10;
    if (!cfg->listen || !cfg->state_dir || !cfg->run_dir) {
        fb_config_free(cfg);
        return -1;
    }
    return 0;
}

void fb_config_free(fb_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < NKEYS; i++) {
        if (cfg_keys[i].type == K_LISTEN || cfg_keys[i].type == K_PATH || cfg_keys[i].type == K_URL) {
            char **slot = FIELD(cfg, &cfg_keys[i], char *);
            free_string(*slot);
            *slot = NULL;
        }
        free(cfg->src_[i]);
        cfg->src_[i] = NULL;
        cfg->redact_[i] = false;
    }
    cfg_providers_free(cfg);
    cfg_network_free(cfg);
}

int fb_config_set(fb_config *cfg, const char *key, const char *value, const char *source,
                  fb_err *err)
{
    if (!source)
        source = "command line";
    if (!key || !value)
        return fb_fail(err, "config: internal: fb_config_set without a key or value (%s)", source);
    const struct cfg_key *k = cfg_find_key(key);
    if (!k)
        return cfg_fail_unknown(err, key, source);
    return cfg_set_value(cfg, k, value, source, false, err);
}

const char *fb_config_source(const fb_config *cfg, const char *key)
{
    const struct cfg_key *k = cfg_find_key(key);
    if (!k)
        return NULL;
    const char *s = cfg->src_[cfg_key_index(k)];
    return s ? s : "default";
}

const char *fb_config_path(const char *flag, char *const *envp, bool *required)
{
    if (flag) {
        *required = true;
        return flag;
    }
    static const char name[] = "FORGEBOX_CONFIG=";
    for (char *const *e = envp; e && *e; e++) {
        if (strncmp(*e, name, sizeof name - 1) == 0 && (*e)[sizeof name - 1] != '\0') {
            *required = true;
            return *e + sizeof name - 1;
        }
    }
    *required = false;
    return FB_CONFIG_DEFAULT_PATH;
}
/* ---- JSON dump -------------------------------------------------------------- */

char *fb_config_dump_json(const fb_config *cfg)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    bool ok = true;
    for (size_t i = 0; i < NKEYS && ok; i++) {
        const struct cfg_key *k = &cfg_keys[i];
        json_t *parent = root;
        const char *leaf = k->name;
        /* One object per section level: pool.jail.size is pool -> jail -> size. */
        for (const char *dot; ok && (dot = strchr(leaf, '.')); leaf = dot + 1) {
            char sec[MAX_NAME];
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - leaf), leaf);
            json_t *child = json_object_get(parent, sec);
            if (!child) {
                child = json_object();
                if (!child || json_object_set_new(parent, sec, child) < 0)
                    ok = false;
            }
            parent = child;
        }
        if (!ok)
            break;
        json_t *v;
        if (cfg->redact_[i]) {
            v = json_string("[redacted]");
        } else {
            switch (k->type) {
            case K_LISTEN:
            case K_PATH: {
                const char *s = *CFIELD(cfg, k, char *);
                v = s ? json_string(s) : json_null();
                if (s && !v) /* jansson refuses bytes that are not UTF-8 */
                    v = json_string("[not UTF-8]");
                break;
            }
            case K_LOGLEVEL:
                v = json_string(fb_log_level_name(*CFIELD(cfg, k, fb_log_level)));
                break;
            case K_BACKEND:
                v = json_string(fb_backend_name(*CFIELD(cfg, k, fb_backend_kind)));
                break;
            case K_NODEMODE:
                v = json_string(*CFIELD(cfg, k, fb_nodes_mode) == FB_NODES_REMOTE ? "remote" : "local");
                break;
            case K_BOOL:
                v = json_boolean(*CFIELD(cfg, k, bool));
                break;
            case K_TOOLS:
                v = fb_toolset_to_json(*CFIELD(cfg, k, fb_toolset));
                break;
            case K_ROLES:
                v = json_array();
                for (int r = 0; v && r < FB_CA_ROLE_COUNT; r++)
                    if (*CFIELD(cfg, k, uint64_t) & FB_CA_ROLE_BIT(r))
                        json_array_append_new(v, json_string(fb_ca_role_name((fb_ca_role)r)));
                break;
            case K_URL:
                v = url_shown(*CFIELD(cfg, k, char *));
                break;
            default:
                v = json_integer((json_int_t)*CFIELD(cfg, k, uint64_t));
                break;
            }
        }
        if (!v || json_object_set_new(parent, leaf, v) < 0)
            ok = false;
    }
    if (ok && cfg_network_dump(cfg, root) < 0)
        ok = false;
    if (ok && cfg_providers_dump(cfg, root) < 0)
        ok = false;
    char *out = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return out;
}

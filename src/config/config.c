/*
 * config.c - see config.h.
 *
 * One table (keys[] below) describes every key: its dotted name, its type,
 * where it lives in fb_config and its range.  The YAML walker, the
 * environment scan, fb_config_set and the JSON dump all go through that
 * table, so a key cannot be settable one way and missing another, and the
 * environment name is always derived from the dotted name rather than kept
 * in a second list that could drift.
 *
 * Every value passes through set_value(), which parses and range-checks it
 * before anything is stored, and records where it came from.  The source
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
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

/* ---- the key table ------------------------------------------------------ */

enum key_type {
    K_LISTEN,   /* host:port */
    K_PATH,     /* absolute path */
    K_LOGLEVEL, /* debug|info|warn|error */
    K_BACKEND,  /* vm|jail */
    K_UINT,     /* decimal integer in [min,max] */
    K_SIZE,     /* bytes, optionally with KiB/MiB/GiB, in [min,max] */
    K_BOOL,     /* true|false (and yes/no, on/off, 1/0) */
};

struct key {
    const char *name;
    enum key_type type;
    size_t off;
    bool optional; /* may be unset (NULL); an empty value unsets */
    uint64_t min, max;
};

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * 1024 * 1024)
#define OFF(field) offsetof(fb_config, field)

static const struct key keys[] = {
    {"listen", K_LISTEN, OFF(listen), false, 0, 0},
    {"state_dir", K_PATH, OFF(state_dir), false, 0, 0},
    {"run_dir", K_PATH, OFF(run_dir), false, 0, 0},
    {"image_dir", K_PATH, OFF(image_dir), true, 0, 0},
    {"log_level", K_LOGLEVEL, OFF(log_level), false, 0, 0},
    {"tls.cert", K_PATH, OFF(tls.cert), true, 0, 0},
    {"tls.key", K_PATH, OFF(tls.key), true, 0, 0},
    {"sandbox.backend", K_BACKEND, OFF(sandbox.backend), false, 0, 0},
    {"sandbox.memory_mib", K_UINT, OFF(sandbox.memory_mib), false, FB_MIN_MEMORY_MIB, FB_MAX_MEMORY_MIB},
    {"sandbox.vcpus", K_UINT, OFF(sandbox.vcpus), false, 1, FB_MAX_VCPUS},
    {"sandbox.disk_mib", K_UINT, OFF(sandbox.disk_mib), false, 1, FB_MAX_DISK_MIB},
    {"sandbox.ttl_s", K_UINT, OFF(sandbox.ttl_s), false, 1, 7 * 86400},
    {"sandbox.max_ttl_s", K_UINT, OFF(sandbox.max_ttl_s), false, 1, 7 * 86400},
    {"sandbox.max_memory_mib", K_UINT, OFF(sandbox.max_memory_mib), false, FB_MIN_MEMORY_MIB, FB_MAX_MEMORY_MIB},
    {"network.internet", K_BOOL, OFF(network.internet), false, 0, 0},
    {"limits.max_body_bytes", K_SIZE, OFF(limits.max_body_bytes), false, 1 * KIB, 64 * MIB},
    {"limits.max_header_bytes", K_SIZE, OFF(limits.max_header_bytes), false, 1 * KIB, 1 * MIB},
    {"limits.max_file_bytes", K_SIZE, OFF(limits.max_file_bytes), false, 1, 1 * GIB},
    {"limits.max_output_bytes", K_SIZE, OFF(limits.max_output_bytes), false, 1, 1 * GIB},
    {"limits.rate_rps", K_UINT, OFF(limits.rate_rps), false, 1, 100000},
    {"limits.rate_burst", K_UINT, OFF(limits.rate_burst), false, 1, 1000000},
    {"limits.max_connections", K_UINT, OFF(limits.max_connections), false, 1, 65536},
    {"limits.request_timeout_s", K_UINT, OFF(limits.request_timeout_s), false, 1, 3600},
    {"quotas.max_sandboxes_per_team", K_UINT, OFF(quotas.max_sandboxes_per_team), false, 1, 100000},
    {"quotas.max_memory_mib_per_team", K_UINT, OFF(quotas.max_memory_mib_per_team), false, FB_MIN_MEMORY_MIB, 16ull * 1024 * 1024},
};

_Static_assert(sizeof keys / sizeof keys[0] == FB_CONFIG_NKEYS,
               "FB_CONFIG_NKEYS in config.h must match the key table");

static const char *const sections[] = {"tls", "sandbox", "network", "limits", "quotas"};
#define NSECTIONS (sizeof sections / sizeof sections[0])

/* FORGEBOX_ variables that belong to other parts of ForgeBox (the CLI, the
 * image build, the test harness); never reported as misspelt keys. */
static const char *const foreign_env[] = {
    "FORGEBOX_CONFIG", "FORGEBOX_TRACE", "FORGEBOX_IMAGE", "FORGEBOX_IMAGE_CACHE",
    "FORGEBOX_BIN", "FORGEBOX_APT_SOURCES", "FORGEBOX_VERSION",
};

#define NKEYS FB_CONFIG_NKEYS
#define ENV_PREFIX "FORGEBOX_"
#define MAX_NAME 128

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *fb_log_level_name(fb_log_level level)
{
    if ((unsigned)level < sizeof level_names / sizeof level_names[0])
        return level_names[level];
    return "?";
}

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static size_t key_index(const struct key *k)
{
    return (size_t)(k - keys);
}

static bool is_section(const char *name)
{
    for (size_t i = 0; i < NSECTIONS; i++)
        if (strcmp(sections[i], name) == 0)
            return true;
    return false;
}

/* "limits.rate_rps" -> "FORGEBOX_LIMITS_RATE_RPS" */
static void env_name(const struct key *k, char *out, size_t cap)
{
    size_t n = strlen(ENV_PREFIX);
    memcpy(out, ENV_PREFIX, n);
    for (const char *p = k->name; *p && n + 1 < cap; p++)
        out[n++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[n] = '\0';
}

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->off))
#define CFIELD(cfg, k, type) ((const type *)((const char *)(cfg) + (k)->off))

/* ---- messages ----------------------------------------------------------- */

/* A value as messages show it: quoted, control bytes escaped, capped. */
static void show_value(const char *v, bool redact, char *out, size_t cap)
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
static int fail_value(fb_err *err, const struct key *k, const char *source, const char *value,
                      bool redact, const char *reason)
{
    char shown[300];
    show_value(value, redact, shown, sizeof shown);
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
static size_t edit_distance(const char *a, const char *b)
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
        const char *dot = strchr(keys[i].name, '.');
        if (dot && strcmp(dot + 1, name) == 0)
            return keys[i].name;
    }
    const char *best = NULL;
    size_t best_d = 3; /* at most 2 edits */
    for (size_t i = 0; i < NKEYS + NSECTIONS; i++) {
        const char *cand = i < NKEYS ? keys[i].name : sections[i - NKEYS];
        size_t d = edit_distance(name, cand);
        if (d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    return best;
}

static int fail_unknown(fb_err *err, const char *name, const char *source)
{
    const char *s = suggest_key(name);
    char shown[300];
    show_value(name, false, shown, sizeof shown);
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
static int set_value(fb_config *cfg, const struct key *k, const char *value, const char *source,
                     bool redact, fb_err *err)
{
    char reason[160];
    char *dup = NULL;
    union {
        uint64_t u;
        bool b;
        int e;
    } parsed = {0};

    if (strlen(value) > FB_CONFIG_MAX_VALUE)
        return fb_fail(err, "config: %s (%s): longer than %d bytes", k->name, source,
                       FB_CONFIG_MAX_VALUE);

    switch (k->type) {
    case K_LISTEN:
        if (fb_config_listen_split(value, NULL, 0, NULL, NULL) < 0)
            return fail_value(err, k, source, value, redact,
                              "must be HOST:PORT or [IPV6]:PORT with a port between 1 and 65535");
        break;
    case K_PATH:
        if (k->optional && value[0] == '\0')
            break;
        if (!valid_abs_path(value))
            return fail_value(err, k, source, value, redact,
                              "must be an absolute path without control characters");
        break;
    case K_LOGLEVEL:
        parsed.e = -1;
        for (int i = 0; i < 4; i++)
            if (strcasecmp(value, level_names[i]) == 0)
                parsed.e = i;
        if (parsed.e < 0)
            return fail_value(err, k, source, value, redact, "must be debug, info, warn or error");
        break;
    case K_BACKEND:
        if (strcasecmp(value, "vm") == 0)
            parsed.e = FB_BACKEND_VM;
        else if (strcasecmp(value, "jail") == 0)
            parsed.e = FB_BACKEND_JAIL;
        else
            return fail_value(err, k, source, value, redact, "must be vm or jail");
        break;
    case K_UINT:
        if (fb_parse_u64(value, k->min, k->max, &parsed.u) < 0) {
            snprintf(reason, sizeof reason, "must be an integer between %llu and %llu",
                     (unsigned long long)k->min, (unsigned long long)k->max);
            return fail_value(err, k, source, value, redact, reason);
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
            return fail_value(err, k, source, value, redact, reason);
        }
        break;
    case K_BOOL:
        if (!parse_bool(value, &parsed.b))
            return fail_value(err, k, source, value, redact, "must be true or false");
        break;
    }

    char *src = strdup(source);
    if (!src)
        return fb_fail(err, "config: out of memory");
    if (k->type == K_LISTEN || k->type == K_PATH) {
        if (value[0] != '\0' && !(dup = strdup(value))) {
            free(src);
            return fb_fail(err, "config: out of memory");
        }
        char **slot = FIELD(cfg, k, char *);
        free(*slot);
        *slot = dup;
    } else if (k->type == K_LOGLEVEL) {
        *FIELD(cfg, k, fb_log_level) = (fb_log_level)parsed.e;
    } else if (k->type == K_BACKEND) {
        *FIELD(cfg, k, fb_backend_kind) = (fb_backend_kind)parsed.e;
    } else if (k->type == K_BOOL) {
        *FIELD(cfg, k, bool) = parsed.b;
    } else {
        *FIELD(cfg, k, uint64_t) = parsed.u;
    }
    size_t i = key_index(k);
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
    cfg->sandbox.backend = FB_BACKEND_VM;
    cfg->sandbox.memory_mib = 512;
    cfg->sandbox.vcpus = 1;
    cfg->sandbox.disk_mib = 256;
    cfg->sandbox.ttl_s = 600;
    cfg->sandbox.max_ttl_s = 3600;
    cfg->sandbox.max_memory_mib = 4096;
    cfg->network.internet = false;
    cfg->limits.max_body_bytes = 1 * MIB;
    cfg->limits.max_header_bytes = 16 * KIB;
    cfg->limits.max_file_bytes = 64 * MIB;
    cfg->limits.max_output_bytes = 8 * MIB;
    cfg->limits.rate_rps = 10;
    cfg->limits.rate_burst = 20;
    cfg->limits.max_connections = 256;
    cfg->limits.request_timeout_s = 30;
    cfg->quotas.max_sandboxes_per_team = 10;
    cfg->quotas.max_memory_mib_per_team = 8192;
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
        if (keys[i].type == K_LISTEN || keys[i].type == K_PATH) {
            char **slot = FIELD(cfg, &keys[i], char *);
            free(*slot);
            *slot = NULL;
        }
        free(cfg->src_[i]);
        cfg->src_[i] = NULL;
        cfg->redact_[i] = false;
    }
}

int fb_config_set(fb_config *cfg, const char *key, const char *value, const char *source,
                  fb_err *err)
{
    if (!source)
        source = "command line";
    if (!key || !value)
        return fb_fail(err, "config: internal: fb_config_set without a key or value (%s)", source);
    const struct key *k = find_key(key);
    if (!k)
        return fail_unknown(err, key, source);
    return set_value(cfg, k, value, source, false, err);
}

const char *fb_config_source(const fb_config *cfg, const char *key)
{
    const struct key *k = find_key(key);
    if (!k)
        return NULL;
    const char *s = cfg->src_[key_index(k)];
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

/* ---- ${VAR} interpolation ----------------------------------------------- */

static bool secret_name(const char *name)
{
    static const char *const marks[] = {"KEY", "TOKEN", "SECRET", "PASSWORD"};
    for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++)
        if (strcasestr(name, marks[i]))
            return true;
    return false;
}

/* Expands ${VAR} from the environment and $${ to ${.  On failure returns -1
 * with why filled in (never containing a variable's value). */
static int interpolate(const char *in, char **out, bool *secret, char *why, size_t why_cap)
{
    size_t cap = FB_CONFIG_MAX_VALUE + 1, n = 0;
    cleanup_free char *buf = malloc(cap);
    if (!buf) {
        snprintf(why, why_cap, "out of memory");
        return -1;
    }
    *secret = false;
    for (const char *p = in; *p;) {
        const char *piece;
        size_t len;
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            piece = "${";
            len = 2;
            p += 3;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *name = p + 2;
            const char *end = strchr(name, '}');
            if (!end) {
                snprintf(why, why_cap, "unterminated ${ (write $${ for a literal ${)");
                return -1;
            }
            size_t nlen = (size_t)(end - name);
            bool ok = nlen > 0 && nlen <= MAX_NAME && !isdigit((unsigned char)name[0]);
            for (size_t i = 0; ok && i < nlen; i++)
                ok = isalnum((unsigned char)name[i]) || name[i] == '_';
            if (!ok) {
                char shown[300];
                char tmp[MAX_NAME + 1];
                size_t c = nlen < MAX_NAME ? nlen : MAX_NAME;
                memcpy(tmp, name, c);
                tmp[c] = '\0';
                show_value(tmp, false, shown, sizeof shown);
                snprintf(why, why_cap,
                         "invalid variable name %s in ${...} (letters, digits and _; "
                         "write $${ for a literal ${)",
                         shown);
                return -1;
            }
            char var[MAX_NAME + 1];
            memcpy(var, name, nlen);
            var[nlen] = '\0';
            piece = getenv(var);
            if (!piece) {
                snprintf(why, why_cap, "environment variable %s is not set", var);
                return -1;
            }
            if (secret_name(var))
                *secret = true;
            len = strlen(piece);
            p = end + 1;
        } else {
            piece = p;
            len = 1;
            p++;
        }
        if (len > FB_CONFIG_MAX_VALUE - n) {
            snprintf(why, why_cap, "longer than %d bytes after ${VAR} interpolation",
                     FB_CONFIG_MAX_VALUE);
            return -1;
        }
        memcpy(buf + n, piece, len);
        n += len;
    }
    buf[n] = '\0';
    *out = steal_pointer(&buf);
    return 0;
}

/* ---- forgebox.yaml ------------------------------------------------------- */

struct file_ctx {
    fb_config *cfg;
    yaml_document_t *doc;
    const char *path;
    size_t line_of[NKEYS]; /* where this file set each key; 0: not yet */
};

static size_t line_of_node(const yaml_node_t *n)
{
    return n->start_mark.line + 1;
}

static bool is_null_scalar(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* A scalar's text, refusing embedded NULs ("\0" in a double-quoted string). */
static const char *scalar_text(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    return strlen(v) == n->data.scalar.length ? v : NULL;
}

static int apply_leaf(struct file_ctx *c, const struct key *k, const yaml_node_t *val,
                      size_t line, fb_err *err)
{
    char source[FB_CONFIG_MAX_VALUE + 32];
    snprintf(source, sizeof source, "%s:%zu", c->path, line);
    size_t i = key_index(k);
    if (c->line_of[i])
        return fb_fail(err, "config: %s (%s): set twice in this file (first at line %zu)",
                       k->name, source, c->line_of[i]);
    c->line_of[i] = line;
    if (val->type != YAML_SCALAR_NODE)
        return fb_fail(err, "config: %s (%s): must be a single value, not a %s", k->name, source,
                       val->type == YAML_MAPPING_NODE ? "mapping" : "list");
    if (is_null_scalar(val))
        return set_value(c->cfg, k, "", source, false, err);
    const char *text = scalar_text(val);
    if (!text)
        return fb_fail(err, "config: %s (%s): contains a NUL byte", k->name, source);
    char why[400];
    bool secret = false;
    cleanup_free char *expanded = NULL;
    if (interpolate(text, &expanded, &secret, why, sizeof why) < 0)
        return fb_fail(err, "config: %s (%s): %s", k->name, source, why);
    return set_value(c->cfg, k, expanded, source, secret, err);
}

static int walk_mapping(struct file_ctx *c, const yaml_node_t *map, const char *section,
                        fb_err *err)
{
    const yaml_node_pair_t *first = map->data.mapping.pairs.start;
    for (const yaml_node_pair_t *pair = first; pair < map->data.mapping.pairs.top; pair++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, pair->key);
        yaml_node_t *vn = yaml_document_get_node(c->doc, pair->value);
        if (!kn || !vn)
            return fb_fail(err, "config: %s: malformed YAML document", c->path);
        size_t line = line_of_node(kn);
        const char *name = kn->type == YAML_SCALAR_NODE ? scalar_text(kn) : NULL;
        if (!name || name[0] == '\0')
            return fb_fail(err, "config: %s:%zu: keys must be plain names", c->path, line);

        /* The same key twice in one mapping is invalid YAML that libyaml
         * lets through; the later one would silently win. */
        for (const yaml_node_pair_t *prev = first; prev < pair; prev++) {
            yaml_node_t *pk = yaml_document_get_node(c->doc, prev->key);
            if (pk && pk->type == YAML_SCALAR_NODE &&
                strcmp((const char *)pk->data.scalar.value, name) == 0)
                return fb_fail(err, "config: %s%s%s (%s:%zu): set twice in this file (first at line %zu)",
                               section ? section : "", section ? "." : "", name, c->path, line,
                               line_of_node(pk));
        }

        char full[2 * MAX_NAME + 2];
        if (strlen(name) > MAX_NAME || (section && strchr(name, '.'))) {
            char where[FB_CONFIG_MAX_VALUE + 32];
            snprintf(where, sizeof where, "%s:%zu", c->path, line);
            snprintf(full, sizeof full, "%s%s%.*s", section ? section : "", section ? "." : "",
                     MAX_NAME, name);
            return fail_unknown(err, full, where);
        }
        snprintf(full, sizeof full, "%s%s%s", section ? section : "", section ? "." : "", name);

        if (!section && is_section(full)) {
            if (is_null_scalar(vn))
                continue; /* "limits:" with nothing under it */
            if (vn->type != YAML_MAPPING_NODE)
                return fb_fail(err, "config: %s (%s:%zu): must be a mapping of %s.* keys", full,
                               c->path, line, full);
            if (walk_mapping(c, vn, full, err) < 0)
                return -1;
            continue;
        }
        const struct key *k = find_key(full);
        if (!k) {
            char where[FB_CONFIG_MAX_VALUE + 32];
            snprintf(where, sizeof where, "%s:%zu", c->path, line);
            return fail_unknown(err, full, where);
        }
        if (apply_leaf(c, k, vn, line, err) < 0)
            return -1;
    }
    return 0;
}

static int read_config_file(const char *path, bool required, char **out, size_t *len, bool *absent,
                            fb_err *err)
{
    *absent = false;
    cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT && !required) {
            *absent = true;
            return 0;
        }
        return fb_fail_errno(err, "config: cannot open %s", path);
    }
    struct stat st;
    if (fstat(fd, &st) < 0)
        return fb_fail_errno(err, "config: cannot stat %s", path);
    if (!S_ISREG(st.st_mode))
        return fb_fail(err, "config: %s: not a regular file", path);
    if (st.st_size > FB_CONFIG_MAX_FILE_BYTES)
        return fb_fail(err, "config: %s: larger than %d bytes", path, FB_CONFIG_MAX_FILE_BYTES);
    /* Read up to one byte more than the cap, so growth since fstat shows. */
    size_t cap = FB_CONFIG_MAX_FILE_BYTES + 1, n = 0;
    cleanup_free char *buf = malloc(cap + 1);
    if (!buf)
        return fb_fail(err, "config: out of memory reading %s", path);
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return fb_fail_errno(err, "config: cannot read %s", path);
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == cap)
            return fb_fail(err, "config: %s: larger than %d bytes", path, FB_CONFIG_MAX_FILE_BYTES);
    }
    buf[n] = '\0';
    *out = steal_pointer(&buf);
    *len = n;
    return 0;
}

static int yaml_error(const yaml_parser_t *p, const char *path, fb_err *err)
{
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_MEMORY_ERROR)
        return fb_fail(err, "config: %s: out of memory parsing YAML", path);
    if (p->context)
        return fb_fail(err, "config: %s:%zu: invalid YAML: %s %s (column %zu)", path,
                       p->problem_mark.line + 1, p->context, problem, p->problem_mark.column + 1);
    return fb_fail(err, "config: %s:%zu: invalid YAML: %s (column %zu)", path,
                   p->problem_mark.line + 1, problem, p->problem_mark.column + 1);
}

int fb_config_load_file(fb_config *cfg, const char *path, bool required, fb_err *err)
{
    if (!path || !*path)
        return fb_fail(err, "config: no configuration file named");
    if (strlen(path) > FB_CONFIG_MAX_VALUE)
        return fb_fail(err, "config: configuration file path longer than %d bytes",
                       FB_CONFIG_MAX_VALUE);
    cleanup_free char *text = NULL;
    size_t len = 0;
    bool absent;
    if (read_config_file(path, required, &text, &len, &absent, err) < 0)
        return -1;
    if (absent)
        return 0;

    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return fb_fail(err, "config: out of memory parsing %s", path);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = yaml_error(&parser, path, err);
        yaml_parser_delete(&parser);
        return rc;
    }

    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        /* A second document would be ignored by everything below. */
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            rc = yaml_error(&parser, path, err);
        } else {
            yaml_node_t *nroot = yaml_document_get_root_node(&next);
            if (nroot)
                rc = fb_fail(err, "config: %s:%zu: only one YAML document is allowed", path,
                             line_of_node(nroot));
            yaml_document_delete(&next);
        }
    }
    if (rc == 0 && root && !is_null_scalar(root)) {
        if (root->type != YAML_MAPPING_NODE) {
            rc = fb_fail(err, "config: %s:%zu: the top level must be a mapping of keys", path,
                         line_of_node(root));
        } else {
            struct file_ctx c = {.cfg = cfg, .doc = &doc, .path = path};
            rc = walk_mapping(&c, root, NULL, err);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/* ---- environment ----------------------------------------------------------- */

static bool looks_like_config(const char *name)
{
    for (const char *p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_')
            return false; /* not a name anyone meant for us */
    for (size_t i = 0; i < sizeof foreign_env / sizeof foreign_env[0]; i++)
        if (strcmp(foreign_env[i], name) == 0)
            return false;
    const char *rest = name + strlen(ENV_PREFIX);
    for (size_t i = 0; i < NSECTIONS; i++) {
        size_t n = strlen(sections[i]);
        if (strncasecmp(rest, sections[i], n) == 0 && rest[n] == '_')
            return true;
    }
    for (size_t i = 0; i < NKEYS; i++) {
        char e[MAX_NAME + 16];
        env_name(&keys[i], e, sizeof e);
        if (edit_distance(name, e) <= 2)
            return true;
    }
    return false;
}

static const struct key *closest_env(const char *name, char *out, size_t cap)
{
    const struct key *best = NULL;
    size_t best_d = SIZE_MAX;
    for (size_t i = 0; i < NKEYS; i++) {
        char e[MAX_NAME + 16];
        env_name(&keys[i], e, sizeof e);
        size_t d = edit_distance(name, e);
        if (d < best_d) {
            best_d = d;
            best = &keys[i];
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

        const struct key *k = NULL;
        for (size_t i = 0; i < NKEYS && !k; i++) {
            char en[MAX_NAME + 16];
            env_name(&keys[i], en, sizeof en);
            if (strcmp(en, name) == 0)
                k = &keys[i];
        }
        if (k) {
            if (set_value(cfg, k, eq + 1, name, false, err) < 0)
                return -1;
            continue;
        }
        if (!looks_like_config(name))
            continue;
        char near[MAX_NAME + 16];
        const struct key *guess = closest_env(name, near, sizeof near);
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
    return cfg->src_[key_index(find_key(name))] == NULL;
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
    const struct key *k = find_key(name);
    bool redact = cfg->redact_[key_index(k)];
    char shown[300];
    show_value(path, redact, shown, sizeof shown);
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
                 " (otherwise no team can create a default sandbox)", err) < 0)
        return -1;
    return 0;
}

/* ---- JSON dump -------------------------------------------------------------- */

char *fb_config_dump_json(const fb_config *cfg)
{
    json_t *root = json_object();
    if (!root)
        return NULL;
    bool ok = true;
    for (size_t i = 0; i < NKEYS && ok; i++) {
        const struct key *k = &keys[i];
        json_t *parent = root;
        const char *leaf = k->name;
        const char *dot = strchr(k->name, '.');
        if (dot) {
            char sec[MAX_NAME];
            snprintf(sec, sizeof sec, "%.*s", (int)(dot - k->name), k->name);
            parent = json_object_get(root, sec);
            if (!parent) {
                parent = json_object();
                if (!parent || json_object_set_new(root, sec, parent) < 0) {
                    ok = false;
                    break;
                }
            }
            leaf = dot + 1;
        }
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
            case K_BOOL:
                v = json_boolean(*CFIELD(cfg, k, bool));
                break;
            default:
                v = json_integer((json_int_t)*CFIELD(cfg, k, uint64_t));
                break;
            }
        }
        if (!v || json_object_set_new(parent, leaf, v) < 0)
            ok = false;
    }
    char *out = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    return out;
}

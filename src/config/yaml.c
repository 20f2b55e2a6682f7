/*
 * yaml.c - fb_config_load_file: reading forgebox.yaml into the key table
 * (config.c), with ${VAR} interpolation.
 *
 * The file is read whole (capped at FB_CONFIG_MAX_FILE_BYTES) and parsed
 * as one YAML document; every leaf must be a known key set once, and every
 * value goes through cfg_set_value with "PATH:LINE" as its source.  The
 * one key whose value is a mapping of names, providers, is providers.c's.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "config/internal.h"

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
int cfg_interpolate(const char *in, char **out, bool *secret, char *why, size_t why_cap)
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
                cfg_show_value(tmp, false, shown, sizeof shown);
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

size_t cfg_yaml_line(const yaml_node_t *n)
{
    return n->start_mark.line + 1;
}

bool cfg_yaml_is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)n->data.scalar.value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
           strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0;
}

/* A scalar's text, refusing embedded NULs ("\0" in a double-quoted string). */
const char *cfg_yaml_text(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;
    return strlen(v) == n->data.scalar.length ? v : NULL;
}

static int apply_leaf(struct file_ctx *c, const struct cfg_key *k, const yaml_node_t *val,
                      size_t line, fb_err *err)
{
    char source[FB_CONFIG_MAX_VALUE + 32];
    snprintf(source, sizeof source, "%s:%zu", c->path, line);
    size_t i = cfg_key_index(k);
    if (c->line_of[i])
        return fb_fail(err, "config: %s (%s): set twice in this file (first at line %zu)",
                       k->name, source, c->line_of[i]);
    c->line_of[i] = line;
    if (val->type == YAML_SEQUENCE_NODE && (k->type == K_TOOLS || k->type == K_ROLES)) {
        char joined[FB_CONFIG_MAX_VALUE + 1];
        if (cfg_yaml_join_list(c->doc, val, joined, sizeof joined) < 0)
            return fb_fail(err, "config: %s (%s): must be a list of %s names", k->name, source,
                           k->type == K_TOOLS ? "tool" : "role");
        return cfg_set_value(c->cfg, k, joined, source, false, err);
    }
    if (val->type != YAML_SCALAR_NODE)
        return fb_fail(err, "config: %s (%s): must be a single value, not a %s", k->name, source,
                       val->type == YAML_MAPPING_NODE ? "mapping" : "list");
    if (cfg_yaml_is_null(val))
        return cfg_set_value(c->cfg, k, "", source, false, err);
    const char *text = cfg_yaml_text(val);
    if (!text)
        return fb_fail(err, "config: %s (%s): contains a NUL byte", k->name, source);
    char why[400];
    bool secret = false;
    cleanup_free char *expanded = NULL;
    if (cfg_interpolate(text, &expanded, &secret, why, sizeof why) < 0)
        return fb_fail(err, "config: %s (%s): %s", k->name, source, why);
    return cfg_set_value(c->cfg, k, expanded, source, secret, err);
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
        size_t line = cfg_yaml_line(kn);
        const char *name = kn->type == YAML_SCALAR_NODE ? cfg_yaml_text(kn) : NULL;
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
                               cfg_yaml_line(pk));
        }

        char full[2 * MAX_NAME + 2];
        if (strlen(name) > MAX_NAME || (section && strchr(name, '.'))) {
            char where[FB_CONFIG_MAX_VALUE + 32];
            snprintf(where, sizeof where, "%s:%zu", c->path, line);
            snprintf(full, sizeof full, "%s%s%.*s", section ? section : "", section ? "." : "",
                     MAX_NAME, name);
            return cfg_fail_unknown(err, full, where);
        }
        snprintf(full, sizeof full, "%s%s%s", section ? section : "", section ? "." : "", name);

        if (!section && strcmp(full, "providers") == 0) {
            if (cfg_yaml_providers(c->cfg, c->doc, vn, c->path, err) < 0)
                return -1;
            continue;
        }
        if (section && strcmp(section, "network") == 0) {
            if (cfg_yaml_network_key(c->cfg, c->doc, name, vn, c->path, line, err) < 0)
                return -1;
            continue;
        }
        if (!section && strncmp(full, "network.", 8) == 0) {
            if (cfg_yaml_network_key(c->cfg, c->doc, full + 8, vn, c->path, line, err) < 0)
                return -1;
            continue;
        }
        if (cfg_is_section(full)) { /* also pool.jail under pool */
            if (cfg_yaml_is_null(vn))
                continue; /* "limits:" with nothing under it */
            if (vn->type != YAML_MAPPING_NODE)
                return fb_fail(err, "config: %s (%s:%zu): must be a mapping of %s.* keys", full,
                               c->path, line, full);
            if (walk_mapping(c, vn, full, err) < 0)
                return -1;
            continue;
        }
        const struct cfg_key *k = cfg_find_key(full);
        if (!k) {
            char where[FB_CONFIG_MAX_VALUE + 32];
            snprintf(where, sizeof where, "%s:%zu", c->path, line);
            return cfg_fail_unknown(err, full, where);
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
    if (fb_read_up_to(fd, buf, cap, &n) < 0)
        return fb_fail_errno(err, "config: cannot read %s", path);
    if (n == cap)
        return fb_fail(err, "config: %s: larger than %d bytes", path, FB_CONFIG_MAX_FILE_BYTES);
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
                             cfg_yaml_line(nroot));
            yaml_document_delete(&next);
        }
    }
    if (rc == 0 && root && !cfg_yaml_is_null(root)) {
        if (root->type != YAML_MAPPING_NODE) {
            rc = fb_fail(err, "config: %s:%zu: the top level must be a mapping of keys", path,
                         cfg_yaml_line(root));
        } else {
            struct file_ctx c = {.cfg = cfg, .doc = &doc, .path = path};
            rc = walk_mapping(&c, root, NULL, err);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

/*
 * providers.c - the `providers:` key of forgebox.yaml: a mapping of names
 * to model providers (src/llm), the first key whose value is a mapping of
 * the user's own names rather than fixed keys.
 *
 *     providers:
 *       local:
 *         kind: openai                      # openai | anthropic
 *         base_url: http://127.0.0.1:11434/v1
 *         api_key: ${OLLAMA_KEY}            # optional
 *         timeout_s: 120                    # optional, 1..3600
 *         max_retries: 3                    # optional, 0..10
 *
 * Every field is checked here, with the message naming the key as
 * providers.NAME.FIELD and the file:line, like every other key.  An
 * api_key is a secret whatever the variable it came from is called: it is
 * never echoed, shown as "[redacted]" in the dump, and wiped when freed.
 * The mapping has no FORGEBOX_* form (names are not known in advance); a
 * key belongs in the environment through ${VAR}.
 */
#define _GNU_SOURCE
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

#define MAX_PROVIDER_NAME 64

struct pctx {
    yaml_document_t *doc;
    const char *path;
    const char *name;
};

static bool valid_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > MAX_PROVIDER_NAME)
        return false;
    for (const char *c = n; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
            return false;
    return true;
}

/* The key of pair as text, refusing a key seen earlier in the mapping. */
static const char *pair_key(const struct pctx *c, const yaml_node_t *map, const yaml_node_pair_t *pair,
                            const char *where, fb_err *err)
{
    yaml_node_t *kn = yaml_document_get_node(c->doc, pair->key);
    const char *k = kn && kn->type == YAML_SCALAR_NODE ? cfg_yaml_text(kn) : NULL;
    size_t line = kn ? cfg_yaml_line(kn) : 0;
    if (!k || !k[0]) {
        fb_fail(err, "config: %s (%s:%zu): keys must be plain names", where, c->path, line);
        return NULL;
    }
    for (const yaml_node_pair_t *prev = map->data.mapping.pairs.start; prev < pair; prev++) {
        yaml_node_t *pk = yaml_document_get_node(c->doc, prev->key);
        if (pk && pk->type == YAML_SCALAR_NODE && strcmp((const char *)pk->data.scalar.value, k) == 0) {
            fb_fail(err, "config: %s.%.*s (%s:%zu): set twice in this file (first at line %zu)", where,
                    MAX_PROVIDER_NAME, k, c->path, line, cfg_yaml_line(pk));
            return NULL;
        }
    }
    return k;
}

/* A field's value after ${VAR}; never echoes the value of api_key. */
static int field_text(const struct pctx *c, const char *field, const yaml_node_t *v, char **out,
                      bool *secret, fb_err *err)
{
    size_t line = cfg_yaml_line(v);
    if (v->type != YAML_SCALAR_NODE)
        return fb_fail(err, "config: providers.%s.%s (%s:%zu): must be a single value", c->name, field,
                       c->path, line);
    const char *text = cfg_yaml_text(v);
    if (!text)
        return fb_fail(err, "config: providers.%s.%s (%s:%zu): contains a NUL byte", c->name, field,
                       c->path, line);
    char why[400];
    if (cfg_interpolate(text, out, secret, why, sizeof why) < 0)
        return fb_fail(err, "config: providers.%s.%s (%s:%zu): %s", c->name, field, c->path, line, why);
    return 0;
}

static int field_uint(const struct pctx *c, const char *field, const char *text, size_t line,
                      uint64_t min, uint64_t max, uint64_t *out, fb_err *err)
{
    char *end = NULL;
    unsigned long long v = 0;
    bool ok = text[0] >= '0' && text[0] <= '9';
    if (ok)
        v = strtoull(text, &end, 10);
    if (!ok || *end || v < min || v > max)
        return fb_fail(err, "config: providers.%s.%s (%s:%zu): must be a whole number from %llu to %llu",
                       c->name, field, c->path, line, (unsigned long long)min, (unsigned long long)max);
    *out = v;
    return 0;
}

static int set_field(const struct pctx *c, fb_config_provider *p, const char *field, const yaml_node_t *v,
                     bool seen[5], fb_err *err)
{
    static const char *const fields[] = {"kind", "base_url", "api_key", "timeout_s", "max_retries"};
    size_t f = 0;
    while (f < 5 && strcmp(field, fields[f]) != 0)
        f++;
    size_t line = cfg_yaml_line(v);
    if (f == 5)
        return fb_fail(err, "config: providers.%s.%.*s (%s:%zu): unknown key (known: kind, base_url, "
                       "api_key, timeout_s, max_retries)", c->name, MAX_NAME, field, c->path, line);
    seen[f] = true;
    char *text = NULL;
    bool secret = false;
    if (field_text(c, field, v, &text, &secret, err) < 0)
        return -1;
    int rc = 0;
    switch (f) {
    case 0:
        if (fb_llm_kind_from_name(text, &p->kind) < 0)
            rc = fb_fail(err, "config: providers.%s.kind (%s:%zu): must be openai or anthropic", c->name,
                         c->path, line);
        break;
    case 1:
        if (!fb_llm_url_allowed(text))
            rc = fb_fail(err, "config: providers.%s.base_url (%s:%zu): must be an http:// or https:// URL "
                         "with a host", c->name, c->path, line);
        else
            p->base_url = steal_pointer(&text);
        break;
    case 2:
        if (strpbrk(text, "\r\n"))
            rc = fb_fail(err, "config: providers.%s.api_key (%s:%zu): contains a line break", c->name,
                         c->path, line);
        else if (text[0])
            p->api_key = steal_pointer(&text);
        break;
    case 3:
        rc = field_uint(c, field, text, line, 1, 3600, &p->timeout_s, err);
        break;
    default:
        rc = field_uint(c, field, text, line, 0, 10, &p->max_retries, err);
        p->max_retries_set = rc == 0;
        break;
    }
    if (text) {
        sodium_memzero(text, strlen(text));
        free(text);
    }
    return rc;
}

static int one_provider(struct pctx *c, fb_config_provider *p, const yaml_node_t *v, size_t line, fb_err *err)
{
    if (v->type != YAML_MAPPING_NODE)
        return fb_fail(err, "config: providers.%s (%s:%zu): must be a mapping with kind and base_url",
                       c->name, c->path, line);
    bool seen[5] = {false};
    char where[MAX_PROVIDER_NAME + 16];
    snprintf(where, sizeof where, "providers.%s", c->name);
    for (const yaml_node_pair_t *pair = v->data.mapping.pairs.start; pair < v->data.mapping.pairs.top; pair++) {
        yaml_node_t *vn = yaml_document_get_node(c->doc, pair->value);
        const char *field = pair_key(c, v, pair, where, err);
        if (!field || !vn || set_field(c, p, field, vn, seen, err) < 0)
            return -1;
    }
    if (!seen[0] || !seen[1])
        return fb_fail(err, "config: providers.%s (%s:%zu): needs %s", c->name, c->path, line,
                       !seen[0] ? "kind (openai or anthropic)" : "base_url");
    return 0;
}

static void provider_clear(fb_config_provider *p)
{
    if (p->api_key) {
        sodium_memzero(p->api_key, strlen(p->api_key));
        free(p->api_key);
    }
    free(p->name);
    free(p->base_url);
    free(p->src);
    memset(p, 0, sizeof *p);
}

void cfg_providers_free(fb_config *cfg)
{
    for (size_t i = 0; i < cfg->nproviders; i++)
        provider_clear(&cfg->providers[i]);
    free(cfg->providers);
    cfg->providers = NULL;
    cfg->nproviders = 0;
}

int cfg_yaml_providers(fb_config *cfg, yaml_document_t *doc, const yaml_node_t *map, const char *path,
                       fb_err *err)
{
    if (cfg_yaml_is_null(map))
        return 0;
    if (map->type != YAML_MAPPING_NODE)
        return fb_fail(err, "config: providers (%s:%zu): must be a mapping of provider names", path,
                       cfg_yaml_line(map));
    struct pctx c = {.doc = doc, .path = path};
    size_t n = (size_t)(map->data.mapping.pairs.top - map->data.mapping.pairs.start);
    if (n > FB_CONFIG_MAX_PROVIDERS)
        return fb_fail(err, "config: providers (%s:%zu): more than %d providers", path, cfg_yaml_line(map),
                       FB_CONFIG_MAX_PROVIDERS);
    fb_config_provider *list = calloc(n ? n : 1, sizeof *list);
    if (!list)
        return fb_fail(err, "config: out of memory reading providers");
    size_t done = 0;
    int rc = 0;
    for (const yaml_node_pair_t *pair = map->data.mapping.pairs.start; rc == 0 && pair < map->data.mapping.pairs.top;
         pair++) {
        yaml_node_t *kn = yaml_document_get_node(doc, pair->key);
        yaml_node_t *vn = yaml_document_get_node(doc, pair->value);
        const char *name = pair_key(&c, map, pair, "providers", err);
        if (!name || !vn) {
            rc = -1;
            break;
        }
        size_t line = cfg_yaml_line(kn);
        if (!valid_name(name)) {
            rc = fb_fail(err, "config: providers.%.*s (%s:%zu): a provider name is 1 to %d of a-z, 0-9, _ "
                         "and -", MAX_PROVIDER_NAME, name, path, line, MAX_PROVIDER_NAME);
            break;
        }
        fb_config_provider *p = &list[done++];
        c.name = name;
        if (!(p->name = strdup(name)) || asprintf(&p->src, "%s:%zu", path, line) < 0) {
            p->src = NULL;
            rc = fb_fail(err, "config: out of memory reading providers");
            break;
        }
        rc = one_provider(&c, p, vn, line, err);
    }
    if (rc < 0) {
        for (size_t i = 0; i < done; i++)
            provider_clear(&list[i]);
        free(list);
        return -1;
    }
    cfg_providers_free(cfg);
    cfg->providers = list;
    cfg->nproviders = done;
    return 0;
}

int cfg_providers_dump(const fb_config *cfg, json_t *root)
{
    if (cfg->nproviders == 0)
        return 0;
    json_t *all = json_object();
    if (!all || json_object_set_new(root, "providers", all) < 0)
        return -1;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const fb_config_provider *p = &cfg->providers[i];
        json_t *one = json_pack("{s:s, s:s, s:s?, s:I, s:I}", "kind", fb_llm_kind_name(p->kind), "base_url",
                                p->base_url, "api_key", p->api_key ? "[redacted]" : NULL, "timeout_s",
                                (json_int_t)(p->timeout_s ? p->timeout_s : FB_LLM_DEFAULT_TIMEOUT_S),
                                "max_retries",
                                (json_int_t)(p->max_retries_set ? p->max_retries : FB_LLM_DEFAULT_MAX_RETRIES));
        if (!one)
            one = json_string("[not UTF-8]");
        if (json_object_set_new(all, p->name, one) < 0)
            return -1;
    }
    return 0;
}

const fb_config_provider *fb_config_provider_find(const fb_config *cfg, const char *name)
{
    for (size_t i = 0; name && i < cfg->nproviders; i++)
        if (strcmp(cfg->providers[i].name, name) == 0)
            return &cfg->providers[i];
    return NULL;
}

fb_llm_provider_opts fb_config_provider_opts(const fb_config_provider *p)
{
    return (fb_llm_provider_opts){
        .kind = p->kind,
        .name = p->name,
        .base_url = p->base_url,
        .api_key = p->api_key,
        .timeout_s = (unsigned)p->timeout_s,
        .max_retries = (unsigned)p->max_retries,
        .max_retries_set = p->max_retries_set,
    };
}

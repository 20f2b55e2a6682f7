/*
 * network.c - the network: section of forgebox.yaml (docs/configuration.md,
 * docs/egress.md):
 *
 *   network:
 *     allow: [pypi.org, "*.pythonhosted.org"]   # the organisation's ceiling
 *     deny: [secret.example.com]                # always wins
 *     allow_private: ["10.0.0.5:3128"]          # exact address:port escape hatch
 *     hosts:                                    # names answered without DNS
 *       mirror.internal: [10.0.0.5]
 *     dns_servers: ["10.0.0.53", "10.0.0.54:5353"]  # default: /etc/resolv.conf
 *
 * Lists and a mapping of names have no FORGEBOX_* form, so these keys live
 * in the file only (like providers:).  Every entry is checked here with the
 * egress grammar (policy.h), so a bad entry stops start-up with the file
 * and line.  The old boolean network.internet is refused with a pointer to
 * network.allow, which replaced it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/internal.h"

static int entry_text(const char *key, const yaml_node_t *n, const char *path, const char **out, fb_err *err)
{
    *out = n->type == YAML_SCALAR_NODE ? cfg_yaml_text(n) : NULL;
    if (!*out)
        return fb_fail(err, "config: network.%s (%s:%zu): each entry must be a single value", key, path,
                       cfg_yaml_line(n));
    return 0;
}

/* A sequence node (or one scalar) as a list of scalar nodes. */
static int seq_items(const char *key, const yaml_node_t *v, const char *path, yaml_node_item_t **start,
                     yaml_node_item_t **top, fb_err *err)
{
    if (v->type != YAML_SEQUENCE_NODE)
        return fb_fail(err, "config: network.%s (%s:%zu): must be a list", key, path, cfg_yaml_line(v));
    *start = v->data.sequence.items.start;
    *top = v->data.sequence.items.top;
    if (*top - *start > FB_EGRESS_MAX_ENTRIES)
        return fb_fail(err, "config: network.%s (%s:%zu): more than %d entries", key, path, cfg_yaml_line(v),
                       FB_EGRESS_MAX_ENTRIES);
    return 0;
}

static int read_list(yaml_document_t *doc, const char *key, const yaml_node_t *v, const char *path,
                     fb_egress_list *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    if (cfg_yaml_is_null(v))
        return 0;
    yaml_node_item_t *it, *top;
    if (seq_items(key, v, path, &it, &top, err) < 0)
        return -1;
    for (; it < top; it++) {
        yaml_node_t *n = yaml_document_get_node(doc, *it);
        const char *text;
        if (!n || entry_text(key, n, path, &text, err) < 0)
            return -1;
        fb_err why = {{0}};
        if (fb_egress_list_add(out, text, &why) != FB_EGRESS_OK)
            return fb_fail(err, "config: network.%s (%s:%zu): %s", key, path, cfg_yaml_line(n), why.msg);
    }
    return 0;
}

static int read_private(yaml_document_t *doc, const yaml_node_t *v, const char *path, fb_config *cfg, fb_err *err)
{
    cfg->network.nallow_private = 0;
    if (cfg_yaml_is_null(v))
        return 0;
    yaml_node_item_t *it, *top;
    if (seq_items("allow_private", v, path, &it, &top, err) < 0)
        return -1;
    for (; it < top; it++) {
        yaml_node_t *n = yaml_document_get_node(doc, *it);
        const char *text;
        if (!n || entry_text("allow_private", n, path, &text, err) < 0)
            return -1;
        fb_err why = {{0}};
        fb_egress_addr *a = &cfg->network.allow_private[cfg->network.nallow_private];
        if (fb_egress_addr_parse(text, false, a, &why) != FB_EGRESS_OK)
            return fb_fail(err, "config: network.allow_private (%s:%zu): %s", path, cfg_yaml_line(n), why.msg);
        cfg->network.nallow_private++;
    }
    return 0;
}

static int one_host(yaml_document_t *doc, const char *name, const yaml_node_t *v, const char *path,
                    fb_config_host *h, fb_err *err)
{
    char canon[FB_EGRESS_HOST_MAX + 1];
    fb_err why = {{0}};
    size_t line = cfg_yaml_line(v);
    if (fb_egress_host_parse(name, canon, sizeof canon, &why) != FB_EGRESS_OK)
        return fb_fail(err, "config: network.hosts (%s:%zu): %s", path, line, why.msg);
    if (!(h->name = strdup(canon)))
        return fb_fail(err, "config: out of memory reading network.hosts");
    const yaml_node_t *single = v->type == YAML_SCALAR_NODE ? v : NULL;
    yaml_node_item_t *it = NULL, *top = NULL;
    if (!single) {
        if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.top == v->data.sequence.items.start ||
            v->data.sequence.items.top - v->data.sequence.items.start > FB_CONFIG_MAX_HOST_ADDRS)
            return fb_fail(err, "config: network.hosts.%s (%s:%zu): must be an address or a list of 1 to %d "
                           "addresses", canon, path, line, FB_CONFIG_MAX_HOST_ADDRS);
        it = v->data.sequence.items.start;
        top = v->data.sequence.items.top;
    }
    for (size_t i = 0; single ? i < 1 : it + i < top; i++) {
        const yaml_node_t *n = single ? single : yaml_document_get_node(doc, it[i]);
        const char *text = n && n->type == YAML_SCALAR_NODE ? cfg_yaml_text(n) : NULL;
        fb_egress_addr a;
        if (!text || fb_egress_addr_parse(text, true, &a, &why) != FB_EGRESS_OK || a.port != 0)
            return fb_fail(err, "config: network.hosts.%s (%s:%zu): '%.64s' is not a numeric address without "
                           "a port", canon, path, n ? cfg_yaml_line(n) : line, text ? text : "");
        if (!(h->addrs[h->naddrs++] = strdup(text)))
            return fb_fail(err, "config: out of memory reading network.hosts");
    }
    return 0;
}

static void hosts_free(fb_config *cfg)
{
    for (size_t i = 0; i < cfg->network.nhosts; i++) {
        free(cfg->network.hosts[i].name);
        for (size_t k = 0; k < cfg->network.hosts[i].naddrs; k++)
            free(cfg->network.hosts[i].addrs[k]);
    }
    free(cfg->network.hosts);
    cfg->network.hosts = NULL;
    cfg->network.nhosts = 0;
}

/* network.dns_servers: numeric address[:port] entries, joined into the
 * comma-separated form c-ares takes. */
static int read_dns(yaml_document_t *doc, const yaml_node_t *v, const char *path, fb_config *cfg, fb_err *err)
{
    free(cfg->network.dns_servers);
    cfg->network.dns_servers = NULL;
    if (cfg_yaml_is_null(v))
        return 0;
    yaml_node_item_t *it, *top;
    if (seq_items("dns_servers", v, path, &it, &top, err) < 0)
        return -1;
    if (top - it > 8)
        return fb_fail(err, "config: network.dns_servers (%s:%zu): more than 8 servers", path, cfg_yaml_line(v));
    char csv[8 * 72] = "";
    size_t used = 0;
    for (; it < top; it++) {
        yaml_node_t *n = yaml_document_get_node(doc, *it);
        const char *text;
        if (!n || entry_text("dns_servers", n, path, &text, err) < 0)
            return -1;
        fb_egress_addr a;
        fb_err why = {{0}};
        if (fb_egress_addr_parse(text, true, &a, &why) != FB_EGRESS_OK)
            return fb_fail(err, "config: network.dns_servers (%s:%zu): %s", path, cfg_yaml_line(n), why.msg);
        char one[72];
        fb_egress_addr_format(&a, one, sizeof one);
        int w = snprintf(csv + used, sizeof csv - used, "%s%s", used ? "," : "", a.port ? one : text);
        if (w < 0 || (size_t)w >= sizeof csv - used)
            return fb_fail(err, "config: network.dns_servers (%s:%zu): too long", path, cfg_yaml_line(n));
        used += (size_t)w;
    }
    if (used && !(cfg->network.dns_servers = strdup(csv)))
        return fb_fail(err, "config: out of memory reading network.dns_servers");
    return 0;
}

static int read_hosts(yaml_document_t *doc, const yaml_node_t *v, const char *path, fb_config *cfg, fb_err *err)
{
    if (cfg_yaml_is_null(v))
        return 0;
    if (v->type != YAML_MAPPING_NODE)
        return fb_fail(err, "config: network.hosts (%s:%zu): must be a mapping of names to addresses", path,
                       cfg_yaml_line(v));
    size_t n = (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start);
    if (n > FB_CONFIG_MAX_HOSTS)
        return fb_fail(err, "config: network.hosts (%s:%zu): more than %d names", path, cfg_yaml_line(v),
                       FB_CONFIG_MAX_HOSTS);
    hosts_free(cfg);
    cfg->network.hosts = calloc(n ? n : 1, sizeof *cfg->network.hosts);
    if (!cfg->network.hosts)
        return fb_fail(err, "config: out of memory reading network.hosts");
    for (const yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(doc, p->value);
        const char *name = kn && kn->type == YAML_SCALAR_NODE ? cfg_yaml_text(kn) : NULL;
        if (!name || !vn)
            return fb_fail(err, "config: network.hosts (%s:%zu): keys must be host names", path, cfg_yaml_line(v));
        fb_config_host *h = &cfg->network.hosts[cfg->network.nhosts++];
        if (one_host(doc, name, vn, path, h, err) < 0)
            return -1;
        for (size_t i = 0; i + 1 < cfg->network.nhosts; i++)
            if (strcmp(cfg->network.hosts[i].name, h->name) == 0)
                return fb_fail(err, "config: network.hosts.%s (%s:%zu): set twice", h->name, path,
                               cfg_yaml_line(kn));
    }
    return 0;
}

int cfg_yaml_network_key(fb_config *cfg, yaml_document_t *doc, const char *key, const yaml_node_t *v,
                         const char *path, size_t line, fb_err *err)
{
    if (strcmp(key, "allow") == 0)
        return read_list(doc, key, v, path, &cfg->network.allow, err);
    if (strcmp(key, "deny") == 0)
        return read_list(doc, key, v, path, &cfg->network.deny, err);
    if (strcmp(key, "allow_private") == 0)
        return read_private(doc, v, path, cfg, err);
    if (strcmp(key, "hosts") == 0)
        return read_hosts(doc, v, path, cfg, err);
    if (strcmp(key, "dns_servers") == 0)
        return read_dns(doc, v, path, cfg, err);
    if (strcmp(key, "internet") == 0)
        return fb_fail(err, "config: network.internet (%s:%zu): replaced by network.allow, the list of host "
                       "names sandboxes may be granted (empty: none); see docs/egress.md", path, line);
    return fb_fail(err, "config: network.%.64s (%s:%zu): unknown key (network has allow, deny, allow_private, "
                   "hosts and dns_servers)", key, path, line);
}

void cfg_network_free(fb_config *cfg)
{
    hosts_free(cfg);
    free(cfg->network.dns_servers);
    cfg->network.dns_servers = NULL;
}

static json_t *list_json(const fb_egress_list *l)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < l->count; i++) {
        char text[FB_EGRESS_HOST_MAX + 16];
        fb_egress_entry_format(&l->entries[i], text, sizeof text);
        json_array_append_new(a, json_string(text));
    }
    return a;
}

int cfg_network_dump(const fb_config *cfg, json_t *root)
{
    json_t *net = json_object();
    if (!net || json_object_set_new(root, "network", net) < 0)
        return -1;
    json_t *priv = json_array(), *hosts = json_object();
    for (size_t i = 0; priv && i < cfg->network.nallow_private; i++) {
        char text[64];
        fb_egress_addr_format(&cfg->network.allow_private[i], text, sizeof text);
        json_array_append_new(priv, json_string(text));
    }
    for (size_t i = 0; hosts && i < cfg->network.nhosts; i++) {
        json_t *addrs = json_array();
        for (size_t k = 0; addrs && k < cfg->network.hosts[i].naddrs; k++)
            json_array_append_new(addrs, json_string(cfg->network.hosts[i].addrs[k]));
        json_object_set_new(hosts, cfg->network.hosts[i].name, addrs);
    }
    if (json_object_set_new(net, "allow", list_json(&cfg->network.allow)) < 0 ||
        json_object_set_new(net, "deny", list_json(&cfg->network.deny)) < 0 ||
        json_object_set_new(net, "allow_private", priv) < 0 || json_object_set_new(net, "hosts", hosts) < 0 ||
        json_object_set_new(net, "dns_servers", cfg->network.dns_servers ? json_string(cfg->network.dns_servers)
                                                                         : json_null()) < 0)
        return -1;
    return 0;
}

/*
 * internal.h - private to src/config: the key table and the helpers that
 * config.c (values), yaml.c (the file) and env.c (environment, checks)
 * share.
 */
#ifndef FB_CONFIG_INTERNAL_H
#define FB_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <yaml.h>

#include "config/config.h"

enum key_type {
    K_LISTEN,   /* host:port */
    K_PATH,     /* absolute path */
    K_LOGLEVEL, /* debug|info|warn|error */
    K_BACKEND,  /* vm|jail */
    K_UINT,     /* decimal integer in [min,max] */
    K_SIZE,     /* bytes, optionally with KiB/MiB/GiB, in [min,max] */
    K_BOOL,     /* true|false (and yes/no, on/off, 1/0) */
    K_TOOLS,    /* tool names, comma- or space-separated (a YAML list too): an fb_toolset */
    K_ROLES,    /* certificate roles (node, gateway), listed like K_TOOLS: a uint64_t role set */
    K_URL,      /* a store URL (sqlite:// or postgresql://); may carry a password */
    K_NODEMODE, /* local|remote: an fb_nodes_mode */
};

struct cfg_key {
    const char *name;
    enum key_type type;
    size_t off;
    bool optional; /* may be unset (NULL); an empty value unsets */
    uint64_t min, max;
};

#define KIB 1024ull
#define MIB (1024ull * 1024)
#define GIB (1024ull * 1024 * 1024)

#define NKEYS FB_CONFIG_NKEYS
#define ENV_PREFIX "FORGEBOX_"
#define MAX_NAME 128

#define FIELD(cfg, k, type) ((type *)((char *)(cfg) + (k)->off))
#define CFIELD(cfg, k, type) ((const type *)((const char *)(cfg) + (k)->off))

extern const struct cfg_key cfg_keys[FB_CONFIG_NKEYS];
extern const char *const cfg_sections[];
extern const size_t cfg_nsections;
/* FORGEBOX_ variables that belong to other parts of ForgeBox. */
extern const char *const cfg_foreign_env[];
extern const size_t cfg_nforeign_env;

const struct cfg_key *cfg_find_key(const char *name);
size_t cfg_key_index(const struct cfg_key *k);
bool cfg_is_section(const char *name);
/* "limits.rate_rps" -> "FORGEBOX_LIMITS_RATE_RPS" */
void cfg_env_name(const struct cfg_key *k, char *out, size_t cap);
/* A value as messages show it: quoted, control bytes escaped, capped. */
void cfg_show_value(const char *v, bool redact, char *out, size_t cap);
/* "config: NAME (SOURCE): unknown key; did you mean ...?" */
int cfg_fail_unknown(fb_err *err, const char *name, const char *source);
/* Edit distance of two short names (case-insensitive), for suggestions. */
size_t cfg_edit_distance(const char *a, const char *b);
/* Parses value for k and, only if it is valid, stores it with its source. */
int cfg_set_value(fb_config *cfg, const struct cfg_key *k, const char *value, const char *source, bool redact,
                  fb_err *err);

/* yaml.c: expands ${VAR} and $${ (why filled on failure, never with a
 * variable's value); *secret when a variable's name looks secret. */
int cfg_interpolate(const char *in, char **out, bool *secret, char *why, size_t why_cap);
size_t cfg_yaml_line(const yaml_node_t *n);
bool cfg_yaml_is_null(const yaml_node_t *n);
/* A scalar's text, NULL when it holds a NUL byte. */
const char *cfg_yaml_text(const yaml_node_t *n);

/* network.c: one network.KEY of forgebox.yaml (allow, deny, allow_private,
 * hosts; internet is refused) into cfg. */
int cfg_yaml_network_key(fb_config *cfg, yaml_document_t *doc, const char *key, const yaml_node_t *v,
                         const char *path, size_t line, fb_err *err);
void cfg_network_free(fb_config *cfg);
/* Adds "network" to a dump; -1 when out of memory. */
int cfg_network_dump(const fb_config *cfg, json_t *root);

/* providers.c: the providers: mapping of forgebox.yaml into cfg. */
int cfg_yaml_providers(fb_config *cfg, yaml_document_t *doc, const yaml_node_t *map, const char *path,
                       fb_err *err);
void cfg_providers_free(fb_config *cfg);
/* Adds "providers" to a dump; -1 when out of memory. */
int cfg_providers_dump(const fb_config *cfg, json_t *root);

/* tasks.c: the tasks.* defaults, a list of tool names, a YAML list as that
 * text.  (A default above its maximum needs no check: the task service
 * lowers it to the maximum, policy.h fb_policy_task_budget.) */
void cfg_tasks_defaults(fb_config *cfg);
int cfg_parse_tools(const char *text, fb_toolset *out, char *why, size_t cap);
int cfg_yaml_join_list(yaml_document_t *doc, const yaml_node_t *seq, char *out, size_t cap);

#endif

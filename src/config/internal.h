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

#include "config/config.h"

enum key_type {
    K_LISTEN,   /* host:port */
    K_PATH,     /* absolute path */
    K_LOGLEVEL, /* debug|info|warn|error */
    K_BACKEND,  /* vm|jail */
    K_UINT,     /* decimal integer in [min,max] */
    K_SIZE,     /* bytes, optionally with KiB/MiB/GiB, in [min,max] */
    K_BOOL,     /* true|false (and yes/no, on/off, 1/0) */
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

#endif

/*
 * router.h - matching a request line against route patterns.
 *
 * Pure: no I/O, no allocation, no libmicrohttpd, so that the unit tests
 * and the fuzzer drive it directly.  A pattern is literal text with
 * "{name}" segments ("{id}", "{exec_id}": the name only documents); an
 * id is 1..64 characters of [A-Za-z0-9_-] (so no "/", "." or "%" ever
 * reaches a handler through one).  The first route
 * whose pattern and method both match wins; a path that matches some
 * pattern with another method is "method not allowed".
 */
#ifndef FB_GW_ROUTER_H
#define FB_GW_ROUTER_H

#include <stdbool.h>
#include <stddef.h>

#define GW_MAX_PARAMS 2
#define GW_PARAM_MAX 65   /* 64 characters and the NUL */
#define GW_ID_MAX_LEN 64

typedef struct gw_route_def {
    const char *method;
    const char *pattern;
} gw_route_def;

typedef struct gw_params {
    size_t n;
    char v[GW_MAX_PARAMS][GW_PARAM_MAX];
} gw_params;

enum { GW_ROUTE_NONE = -1, GW_ROUTE_BAD_METHOD = -2 };

/* Whether path matches pattern; fills params (n = the number of {name}). */
bool gw_route_match(const char *pattern, const char *path, gw_params *params);
/* The index of the matching route in defs[0..n), GW_ROUTE_NONE or
 * GW_ROUTE_BAD_METHOD; params is filled for a match. */
int gw_route_find(const gw_route_def *defs, size_t n, const char *method, const char *path, gw_params *params);

#endif

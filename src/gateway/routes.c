/*
 * routes.c - the route table, assembled from the declarations each
 * resource's handler file makes (gw.h), and `forgebox routes` (gateway.h).
 *
 * Each h_*.c file declares its routes next to its handlers (method,
 * pattern, how the resource is resolved and authorised, the body it
 * takes); this file only lists the files, so a new resource is one new
 * file and one line here.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>

#include "gateway/gateway.h"
#include "gateway/gw.h"

#define MAX_ROUTES 64

static const gw_route *const groups[] = {
    gw_routes_health, gw_routes_sandboxes, gw_routes_execs, gw_routes_exec_events, gw_routes_files,
    gw_routes_keys,   gw_routes_users,     gw_routes_teams, gw_routes_audit,       gw_routes_tasks,
    gw_routes_mcp, gw_routes_sessions, gw_routes_config,
};

static const gw_route *table[MAX_ROUTES];
static gw_route_def defs[MAX_ROUTES];
static size_t ntable;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void assemble(void)
{
    for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++)
        for (const gw_route *r = groups[g]; r->def.method && ntable < MAX_ROUTES; r++) {
            table[ntable] = r;
            defs[ntable] = r->def;
            ntable++;
        }
}

size_t gw_routes_count(void)
{
    pthread_once(&once, assemble);
    return ntable;
}

const gw_route *gw_route_at(size_t i)
{
    pthread_once(&once, assemble);
    return i < ntable ? table[i] : NULL;
}

const gw_route_def *gw_route_defs(void)
{
    pthread_once(&once, assemble);
    return defs;
}

const char *const *fb_gateway_routes(void)
{
    static char text[MAX_ROUTES][96];
    static const char *list[MAX_ROUTES + 1];
    size_t n = gw_routes_count();
    for (size_t i = 0; i < n; i++) {
        snprintf(text[i], sizeof text[i], "%s %s", defs[i].method, defs[i].pattern);
        list[i] = text[i];
    }
    list[n] = NULL;
    return list;
}

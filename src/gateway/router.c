/*
 * router.c - route pattern matching (router.h).
 *
 * Walks pattern and path together; a "{name}" segment ("{id}",
 * "{exec_id}") takes the path up to the next "/" if it is a well-formed id.  Linear in the path's length,
 * no recursion, no backtracking: a hostile path costs what it weighs.
 */
#include "gateway/router.h"

#include <string.h>

static bool id_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
           ch == '-';
}

bool gw_route_match(const char *pattern, const char *path, gw_params *params)
{
    const char *p = pattern, *u = path;
    params->n = 0;
    while (*p && *u) {
        const char *close = *p == '{' ? strchr(p, '}') : NULL;
        if (close) {
            size_t n = 0;
            while (u[n] && u[n] != '/' && n <= GW_ID_MAX_LEN) {
                if (!id_char(u[n]))
                    return false;
                n++;
            }
            if (n == 0 || n > GW_ID_MAX_LEN || params->n >= GW_MAX_PARAMS)
                return false;
            memcpy(params->v[params->n], u, n);
            params->v[params->n][n] = '\0';
            params->n++;
            p = close + 1;
            u += n;
            continue;
        }
        if (*p != *u)
            return false;
        p++;
        u++;
    }
    return *p == '\0' && *u == '\0';
}

int gw_route_find(const gw_route_def *defs, size_t n, const char *method, const char *path, gw_params *params)
{
    int found = GW_ROUTE_NONE;
    gw_params tmp;
    for (size_t i = 0; i < n; i++) {
        if (!gw_route_match(defs[i].pattern, path, &tmp))
            continue;
        if (strcmp(defs[i].method, method) == 0) {
            *params = tmp;
            return (int)i;
        }
        found = GW_ROUTE_BAD_METHOD;
    }
    return found;
}

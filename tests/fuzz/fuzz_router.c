/*
 * fuzz_router.c - libFuzzer target for the gateway's route matching
 * (src/gateway/router.h) against the real route table.
 *
 * Input: "METHOD PATH" (the first space splits them; NUL-terminated
 * copies are made).  Checks, beyond "no crash, no sanitizer report": a
 * match's parameters are well-formed ids, and matching is deterministic.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gw.h"
#include "gateway/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *sp = strchr(text, ' ');
    const char *method = "GET", *path = text;
    if (sp) {
        *sp = '\0';
        method = text;
        path = sp + 1;
    }
    gw_params p, q;
    int a = gw_route_find(gw_route_defs(), gw_routes_count(), method, path, &p);
    int b = gw_route_find(gw_route_defs(), gw_routes_count(), method, path, &q);
    if (a != b)
        abort();
    if (a >= 0) {
        for (size_t i = 0; i < p.n; i++) {
            size_t n = strlen(p.v[i]);
            if (n == 0 || n > GW_ID_MAX_LEN || strspn(p.v[i], "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                           "0123456789_-") != n)
                abort();
        }
    } else if (a != GW_ROUTE_NONE && a != GW_ROUTE_BAD_METHOD) {
        abort();
    }
    free(text);
    return 0;
}

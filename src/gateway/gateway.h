/*
 * gateway.h - `forgebox serve`: the authenticated HTTP gateway.
 *
 * The only way in (DESIGN.md): API keys with scopes, per-team resources,
 * rate limits and quotas, every decision audited, JSON errors with the
 * right status.  It runs until SIGTERM or SIGINT, then destroys its live
 * sandboxes, records that, and returns.
 */
#ifndef FB_GATEWAY_H
#define FB_GATEWAY_H

#include <stddef.h>

#include "common/util.h"
#include "config/config.h"

/* Serves until a termination signal.  image_dir: the guest image. */
int fb_gateway_run(const fb_config *cfg, const char *image_dir, fb_err *err);

/* A second listener run beside the gateway on the same service and rate
 * limits (the E2B-compatible API, src/compat/e2b).  start runs once the
 * service is open (fb_gateway_shared, gateway/authgate.h); quiesce stops
 * taking connections; stop ends it and puts back everything it holds of
 * the service, before the service closes. */
struct fb_gateway_shared;
typedef struct fb_gateway_companion {
    int (*start)(const struct fb_gateway_shared *shared, void **state, fb_err *err);
    void (*quiesce)(void *state);
    void (*stop)(void *state);
} fb_gateway_companion;

/* fb_gateway_run with a companion listener (NULL: none). */
int fb_gateway_run_with(const fb_config *cfg, const char *image_dir, const fb_gateway_companion *companion,
                        fb_err *err);

/* The route table, for `forgebox routes` and the OpenAPI consistency
 * test: "METHOD /path/{param}" strings, NULL-terminated. */
const char *const *fb_gateway_routes(void);

#endif

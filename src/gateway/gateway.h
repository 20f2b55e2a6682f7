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

/* The route table, for `forgebox routes` and the OpenAPI consistency
 * test: "METHOD /path/{param}" strings, NULL-terminated. */
const char *const *fb_gateway_routes(void);

#endif

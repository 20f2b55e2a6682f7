/*
 * pool.h - a warm pool: sandboxes of one shape booted ahead of demand.
 *
 * Booting is most of a sandbox's start (a jail's namespaces and mounts, a
 * VM's kernel under emulation).  A pool keeps `size` sandboxes of one
 * shape booted to the agent's "ready" (fb_sandbox_boot), assigned to the
 * pool and warmed with one /bin/true (a sandbox's first process costs more
 * than later ones), so that a request of that shape gets one at once; a
 * request of another shape gets nothing and boots cold.  A pooled sandbox
 * holds no user data: only that /bin/true has run in it, nothing was
 * copied into it.
 * It is used once, then destroyed like any other; a background thread
 * boots replacements, and drops (and replaces) any that died while idle.
 *
 * The pool knows nothing of teams or quotas: its sandboxes belong to
 * nobody until a caller takes one and accounts for it.
 */
#ifndef FB_POOL_H
#define FB_POOL_H

#include <stdio.h>

#include "sandbox/sandbox.h"

typedef struct fb_pool fb_pool;

/* Starts a pool of `size` (1..1024) sandboxes shaped like *shape (copied,
 * with the strings it points to; a shape with a network grant is refused).
 * Boots happen in the background, so this returns at once. */
fb_pool *fb_pool_start(const fb_sandbox_config *shape, unsigned size, fb_err *err);
/* Whether `want` is the pool's shape: backend, memory, vCPUs, disk, tmp,
 * pids, output cap, image, no network grant. */
bool fb_pool_matches(const fb_pool *p, const fb_sandbox_config *want);
/* A ready sandbox of the shape `want`, already assigned (the caller owns
 * it and destroys it with fb_sandbox_destroy), or NULL: the shape differs
 * or none is ready.  Counts a hit or a miss; never blocks on a boot. */
fb_sandbox *fb_pool_take(fb_pool *p, const fb_sandbox_config *want);
/* Sandboxes booted and waiting now. */
unsigned fb_pool_ready(fb_pool *p);
/* Waits up to timeout_ms for `n` sandboxes to be ready; true if they are. */
bool fb_pool_wait_ready(fb_pool *p, unsigned n, int timeout_ms);
/* Stops refilling and destroys every waiting sandbox.  NULL is fine. */
void fb_pool_stop(fb_pool *p);

/* Prometheus text for every pool this process ever started, by backend:
 * forgebox_pool_ready (gauge), forgebox_pool_hits_total and
 * forgebox_pool_misses_total (counters). */
void fb_pool_metrics(FILE *f);

#endif

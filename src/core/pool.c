/*
 * pool.c - the service's warm pools: pool.jail.size and pool.vm.size
 * sandboxes of the default shape, booted ahead (src/sandbox/pool.h).
 *
 * The shape is exactly what a create that names nothing but the backend
 * gets (core_sandbox_config), so fb_core_sandbox_create can ask the pool
 * first and boot cold only on a miss.  A pooled sandbox belongs to no team
 * until taken: the creator reserves the team's quota before asking, as for
 * a cold boot.  Requests with a network grant never match (the grant is
 * wired into the sandbox when it boots).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "core/internal.h"
#include "sandbox/pool.h"

/* Guards c->pools: a take never meets a pool being stopped. */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;

static int start_one(fb_core *c, fb_backend_kind backend, uint64_t size, fb_err *err)
{
    if (size == 0)
        return 0;
    fb_sandbox_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.has_backend = true;
    spec.backend = backend;
    fb_sandbox_config shape;
    uint64_t ttl;
    fb_core_err cerr;
    if (core_sandbox_config(c, &spec, &shape, &ttl, &cerr) < 0)
        return fb_fail(err, "pool.%s: %s", fb_backend_name(backend), cerr.msg);
    fb_pool *p = fb_pool_start(&shape, (unsigned)size, err);
    if (!p)
        return -1;
    pthread_mutex_lock(&pools_lock);
    c->pools[backend == FB_BACKEND_JAIL ? 1 : 0] = p;
    pthread_mutex_unlock(&pools_lock);
    return 0;
}

int core_pool_start(fb_core *c, fb_err *err)
{
    if (start_one(c, FB_BACKEND_JAIL, c->cfg->pool.jail_size, err) < 0 ||
        start_one(c, FB_BACKEND_VM, c->cfg->pool.vm_size, err) < 0) {
        core_pool_stop(c);
        return -1;
    }
    return 0;
}

fb_sandbox *core_pool_take(fb_core *c, const fb_sandbox_config *sc)
{
    pthread_mutex_lock(&pools_lock);
    fb_pool *p = c->pools[sc->backend == FB_BACKEND_JAIL ? 1 : 0];
    fb_sandbox *sb = p ? fb_pool_take(p, sc) : NULL;
    pthread_mutex_unlock(&pools_lock);
    return sb;
}

void core_pool_stop(fb_core *c)
{
    pthread_mutex_lock(&pools_lock);
    fb_pool *p[2] = {c->pools[0], c->pools[1]};
    c->pools[0] = c->pools[1] = NULL;
    pthread_mutex_unlock(&pools_lock);
    fb_pool_stop(p[0]);
    fb_pool_stop(p[1]);
}

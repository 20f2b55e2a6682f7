/*
 * pool.c - the warm pool (pool.h).
 *
 * One refill thread per pool boots sandboxes one at a time (on the sandbox
 * module's spawner threads, like every boot) until `size` are waiting, and
 * looks over the waiting ones once a second: one that died while idle (its
 * agent crashed, someone killed it) is destroyed and replaced, so a take
 * never hands out a corpse - and if one dies between the look and the
 * take, fb_sandbox_assign says so and the next one is tried.  A boot that
 * fails is retried after a pause that doubles up to 30 s, so a broken
 * image does not turn the pool into a busy loop.
 *
 * Taking is a pop under the pool's lock plus the assign: no boot, no
 * system call beyond waking the refill thread.
 */
#define _GNU_SOURCE
#include "sandbox/pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define POOL_MAX 1024
#define RETRY_MAX_MS 30000
#ifndef REFILL_PAUSE_MS
#define REFILL_PAUSE_MS 100
#endif

struct fb_pool {
    fb_sandbox_config shape;
    char image_dir[4096], state_dir[4096], run_dir[4096];
    unsigned size;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* refill thread: a take or stop; waiters: a sandbox arrived */
    fb_sandbox **idle;       /* oldest first */
    unsigned nidle;
    bool stopping;
    uint64_t last_take_ns;   /* fb_now_ns() of the latest take */
    pthread_t thread;
    struct pool_stats *stats;
};

/* Per backend, for /metrics: counters live as long as the process. */
static struct pool_stats {
    unsigned long long hits, misses;
    unsigned ready;
} stats[2];
static pthread_mutex_t stats_lock = PTHREAD_MUTEX_INITIALIZER;

static void set_ready_locked(fb_pool *p)
{
    pthread_mutex_lock(&stats_lock);
    p->stats->ready = p->nidle;
    pthread_mutex_unlock(&stats_lock);
}

static void count(fb_pool *p, bool hit)
{
    pthread_mutex_lock(&stats_lock);
    if (hit)
        p->stats->hits++;
    else
        p->stats->misses++;
    pthread_mutex_unlock(&stats_lock);
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool fb_pool_matches(const fb_pool *p, const fb_sandbox_config *w)
{
    const fb_sandbox_config *s = &p->shape;
    return w->backend == s->backend && w->accel == s->accel && w->memory_mib == s->memory_mib &&
           w->vcpus == s->vcpus && w->disk_mib == s->disk_mib && w->tmp_mib == s->tmp_mib &&
           w->pids == s->pids && w->max_output == s->max_output && !w->net_adopt &&
           w->tcg_cache_mib == s->tcg_cache_mib && w->no_vm_snapshot == s->no_vm_snapshot &&
           same_str(w->image_dir, s->image_dir) && same_str(w->state_dir, s->state_dir) &&
           same_str(w->run_dir, s->run_dir);
}

/* Removes the waiting sandboxes that died; returns them in dead[]. */
static unsigned sweep_locked(fb_pool *p, fb_sandbox **dead)
{
    unsigned k = 0, nd = 0;
    for (unsigned i = 0; i < p->nidle; i++) {
        if (fb_sandbox_state(p->idle[i]) != FB_OK)
            dead[nd++] = p->idle[i];
        else
            p->idle[k++] = p->idle[i];
    }
    p->nidle = k;
    return nd;
}

static void wait_ms_locked(fb_pool *p, unsigned ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Takes the sandbox (a pool hands out assigned sandboxes) and runs one
 * /bin/true in it, so that the first command a user runs does not pay for
 * the sandbox's first process (its exec path's first faults).  It leaves
 * nothing behind: no file, no process, nothing in /workspace or /tmp. */
static bool warm_up(fb_sandbox *sb)
{
    fb_err err = {{0}};
    if (fb_sandbox_assign(sb, &err) != FB_OK)
        return false;
    const char *argv[] = {"/bin/true", NULL};
    fb_exec_req req = {.argv = argv, .timeout_ms = 30000, .stdin_fd = -1};
    fb_exec_result res;
    return fb_sandbox_exec(sb, &req, &res, &err) == 0 && res.started && res.exit_code == 0 &&
           !res.signal;
}

static void *refill_main(void *arg)
{
    fb_pool *p = arg;
    unsigned retry_ms = 1000;
    fb_sandbox **dead = calloc(p->size, sizeof *dead);
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        unsigned nd = dead ? sweep_locked(p, dead) : 0;
        set_ready_locked(p);
        if (nd) {
            pthread_mutex_unlock(&p->mu);
            for (unsigned i = 0; i < nd; i++)
                fb_sandbox_destroy(dead[i]);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->nidle >= p->size) {
            wait_ms_locked(p, 1000);
            continue;
        }
        /* A take just woke us: while sandboxes remain, let the taker's
         * first commands have the CPUs before a boot competes for them. */
        if (p->nidle > 0 && fb_now_ns() - p->last_take_ns < REFILL_PAUSE_MS * 1000000ull) {
            wait_ms_locked(p, REFILL_PAUSE_MS);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        fb_sandbox *sb = NULL;
        fb_err err = {{0}};
        fb_errc code = fb_sandbox_boot(&p->shape, &sb, &err);
        pthread_mutex_lock(&p->mu);
        if (code != FB_OK) {
            fprintf(stderr, "forgebox: warning: the %s pool cannot boot a sandbox (next try in %u ms): %s\n",
                    fb_backend_name(p->shape.backend), retry_ms, err.msg);
            if (!p->stopping)
                wait_ms_locked(p, retry_ms);
            retry_ms = retry_ms >= RETRY_MAX_MS / 2 ? RETRY_MAX_MS : retry_ms * 2;
            continue;
        }
        retry_ms = 1000;
        pthread_mutex_unlock(&p->mu);
        bool warm = warm_up(sb);
        pthread_mutex_lock(&p->mu);
        if (!warm || p->stopping || p->nidle >= p->size) {
            pthread_mutex_unlock(&p->mu);
            fb_sandbox_destroy(sb);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        p->idle[p->nidle++] = sb;
        set_ready_locked(p);
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    free(dead);
    return NULL;
}

fb_pool *fb_pool_start(const fb_sandbox_config *shape, unsigned size, fb_err *err)
{
    if (size < 1 || size > POOL_MAX) {
        fb_fail(err, "a pool holds 1 to %d sandboxes", POOL_MAX);
        return NULL;
    }
    if (shape->net_adopt) {
        fb_fail(err, "internal: a pooled sandbox cannot carry a network grant");
        return NULL;
    }
    if (!shape->image_dir || !shape->run_dir || !shape->state_dir ||
        strlen(shape->image_dir) >= 4096 || strlen(shape->run_dir) >= 4096 ||
        strlen(shape->state_dir) >= 4096) {
        fb_fail(err, "internal: a pool needs image, state and runtime directories");
        return NULL;
    }
    fb_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->idle = calloc(size, sizeof *p->idle))) {
        free(p);
        fb_fail(err, "out of memory");
        return NULL;
    }
    p->shape = *shape;
    snprintf(p->image_dir, sizeof p->image_dir, "%s", shape->image_dir);
    snprintf(p->state_dir, sizeof p->state_dir, "%s", shape->state_dir);
    snprintf(p->run_dir, sizeof p->run_dir, "%s", shape->run_dir);
    p->shape.image_dir = p->image_dir;
    p->shape.state_dir = p->state_dir;
    p->shape.run_dir = p->run_dir;
    p->size = size;
    p->stats = &stats[shape->backend == FB_BACKEND_JAIL ? 1 : 0];
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    int rc = pthread_create(&p->thread, NULL, refill_main, p);
    if (rc != 0) {
        errno = rc;
        fb_fail_errno(err, "cannot start the pool's refill thread");
        free(p->idle);
        free(p);
        return NULL;
    }
    return p;
}

fb_sandbox *fb_pool_take(fb_pool *p, const fb_sandbox_config *want)
{
    if (!fb_pool_matches(p, want)) {
        count(p, false);
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        fb_sandbox *sb = NULL;
        if (p->nidle > 0) {
            sb = p->idle[0];
            memmove(p->idle, p->idle + 1, (p->nidle - 1) * sizeof *p->idle);
            p->nidle--;
            p->last_take_ns = fb_now_ns();
            set_ready_locked(p);
            pthread_cond_broadcast(&p->cv); /* refill */
        }
        pthread_mutex_unlock(&p->mu);
        if (!sb) {
            count(p, false);
            return NULL;
        }
        if (fb_sandbox_state(sb) == FB_OK) {
            count(p, true);
            return sb;
        }
        fb_sandbox_destroy(sb); /* died while waiting: try the next */
    }
}

unsigned fb_pool_ready(fb_pool *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->nidle;
    pthread_mutex_unlock(&p->mu);
    return n;
}

bool fb_pool_wait_ready(fb_pool *p, unsigned n, int timeout_ms)
{
    uint64_t end = fb_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    pthread_mutex_lock(&p->mu);
    while (p->nidle < n && fb_now_ns() < end)
        wait_ms_locked(p, 50);
    bool ok = p->nidle >= n;
    pthread_mutex_unlock(&p->mu);
    return ok;
}

void fb_pool_stop(fb_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL); /* at most the boot in progress */
    for (unsigned i = 0; i < p->nidle; i++)
        fb_sandbox_destroy(p->idle[i]);
    p->nidle = 0;
    set_ready_locked(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->idle);
    free(p);
}

void fb_pool_metrics(FILE *f)
{
    static const char *const names[2] = {"vm", "jail"};
    pthread_mutex_lock(&stats_lock);
    fprintf(f, "# HELP forgebox_pool_ready Warm sandboxes booted and waiting, by backend.\n"
               "# TYPE forgebox_pool_ready gauge\n");
    for (int i = 0; i < 2; i++)
        fprintf(f, "forgebox_pool_ready{backend=\"%s\"} %u\n", names[i], stats[i].ready);
    fprintf(f, "# HELP forgebox_pool_hits_total Creations served from the warm pool.\n"
               "# TYPE forgebox_pool_hits_total counter\n");
    for (int i = 0; i < 2; i++)
        fprintf(f, "forgebox_pool_hits_total{backend=\"%s\"} %llu\n", names[i], stats[i].hits);
    fprintf(f, "# HELP forgebox_pool_misses_total Creations of a pooled backend that booted cold.\n"
               "# TYPE forgebox_pool_misses_total counter\n");
    for (int i = 0; i < 2; i++)
        fprintf(f, "forgebox_pool_misses_total{backend=\"%s\"} %llu\n", names[i], stats[i].misses);
    pthread_mutex_unlock(&stats_lock);
}

/*
 * task_events.c - a task's transcript (core.h, "tasks"): numbered events
 * kept in memory while the task is, written to the store as they happen,
 * and read back by fb_core_task_events_next, which follows a live task
 * (waiting on its condition variable) and replays a stored one.
 *
 * Numbers are assigned under the tasks lock, so they are dense and in
 * order; the store write happens after, in a batch of the task journal's
 * (task_journal.c: the event is already readable from memory, and the
 * store only matters once the task has left memory, which waits for the
 * journal to have written everything).  An event is
 * {seq, type, at, data}: the same object in memory, in the store (data as
 * text) and on the wire.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* Synchronously: start-up recovery, where nothing else writes. */
static void store_event(fb_core *c, const char *task_id, uint64_t seq, const char *type, const json_t *data,
                        const char *at)
{
    char *text = json_dumps(data, JSON_COMPACT);
    fb_err e = {{0}};
    if (!text || fb_store_task_event_append(c->store, task_id, seq, type, text, at, &e) < 0)
        fb_log("error", NULL, "cannot record a task event",
               json_pack("{s:s, s:s, s:s}", "task", task_id, "type", type, "error", text ? e.msg : "out of memory"));
    free(text);
}

void core_task_emit(fb_core *c, core_task *t, const char *type, json_t *data)
{
    if (!data)
        data = json_object();
    char at[FB_TIME_MAX];
    fb_time_now(at);
    pthread_mutex_lock(&c->tasks.lock);
    if (t->nev == t->evcap) {
        size_t ncap = t->evcap ? t->evcap * 2 : 64;
        json_t **nv = realloc(t->events, ncap * sizeof *nv);
        if (!nv) {
            pthread_mutex_unlock(&c->tasks.lock);
            fb_log("error", NULL, "out of memory recording a task event", json_pack("{s:s}", "task", t->id));
            json_decref(data);
            return;
        }
        t->events = nv;
        t->evcap = ncap;
    }
    uint64_t seq = t->nev + 1;
    json_t *ev = json_pack("{s:I, s:s, s:s, s:O}", "seq", (json_int_t)seq, "type", type, "at", at, "data", data);
    if (!ev) {
        pthread_mutex_unlock(&c->tasks.lock);
        json_decref(data);
        return;
    }
    t->events[t->nev++] = ev;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&c->tasks.lock);
    char *text = json_dumps(data, JSON_COMPACT);
    if (text)
        core_journal_add(c, t->id, seq, type, text, at); /* batched, off this thread (task_journal.c) */
    else
        fb_log("error", NULL, "out of memory recording a task event", json_pack("{s:s}", "task", t->id));
    json_decref(data);
}

void core_task_emit_stored(fb_core *c, const char *task_id, const char *type, json_t *data)
{
    uint64_t last = 0;
    fb_err e = {{0}};
    char at[FB_TIME_MAX];
    fb_time_now(at);
    if (data && fb_store_task_event_last(c->store, task_id, &last, &e) == 0)
        store_event(c, task_id, last + 1, type, data, at);
    json_decref(data);
}

void core_task_set_state(fb_core *c, core_task *t, fb_task_state s)
{
    pthread_mutex_lock(&c->tasks.lock);
    t->state = s;
    pthread_mutex_unlock(&c->tasks.lock);
    core_task_save(c, t, false);
    core_task_emit(c, t, "state", json_pack("{s:s}", "state", fb_task_state_name(s)));
}

/* ---- reading -------------------------------------------------------------------------- */

void core_task_timedwait(fb_core *c, core_task *t, uint64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (ms % 1000) * 1000000ull;
    ts.tv_sec += (time_t)(ms / 1000 + ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    pthread_cond_timedwait(&t->cond, &c->tasks.lock, &ts);
}

static bool live_ended(const core_task *t)
{
    return fb_task_state_final(t->state) && (!t->has_thread || t->thread_done);
}

static int next_live(fb_core *c, core_task *t, uint64_t after, json_t **ev, int timeout_ms)
{
    uint64_t deadline = fb_time_monotonic_ns() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000ull;
    pthread_mutex_lock(&c->tasks.lock);
    for (;;) {
        if (after < t->nev) {
            *ev = json_incref(t->events[after]);
            pthread_mutex_unlock(&c->tasks.lock);
            return 1;
        }
        if (live_ended(t)) {
            pthread_mutex_unlock(&c->tasks.lock);
            return -1;
        }
        uint64_t now = fb_time_monotonic_ns();
        if (now >= deadline)
            break;
        core_task_timedwait(c, t, (deadline - now + 999999) / 1000000);
    }
    pthread_mutex_unlock(&c->tasks.lock);
    return 0;
}

typedef struct one_event {
    json_t *ev;
} one_event;

static int take_one(void *ctx, uint64_t seq, const char *type, const char *data, const char *at)
{
    one_event *o = ctx;
    json_t *d = json_loads(data, JSON_DECODE_ANY, NULL);
    o->ev = json_pack("{s:I, s:s, s:s, s:o}", "seq", (json_int_t)seq, "type", type, "at", at, "data",
                      d ? d : json_null());
    return 1;
}

int fb_core_task_events_next(fb_core *c, fb_task_ref *ref, uint64_t after, json_t **ev, int timeout_ms)
{
    *ev = NULL;
    if (ref->t)
        return next_live(c, ref->t, after, ev, timeout_ms);
    one_event o = {NULL};
    fb_err e = {{0}};
    if (fb_store_task_events(c->store, ref->id, after, 1, take_one, &o, &e) < 0) {
        fb_log("error", NULL, "cannot read task events", json_pack("{s:s, s:s}", "task", ref->id, "error", e.msg));
        return -1;
    }
    if (o.ev) {
        *ev = o.ev;
        return 1;
    }
    return -1; /* a task only the store has has ended: nothing more will come */
}

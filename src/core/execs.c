/*
 * execs.c - the exec service: commands in a sandbox, read through the
 * sandbox's own event log (core.h).
 *
 * The sandbox does the work (sandbox.h): its I/O thread runs any number of
 * commands at once and appends what each produces to that exec's bounded
 * event log, which any number of readers read at their own pace and which
 * lives as long as someone holds the exec.  So no thread here runs a
 * command and no buffer here copies its output: a slow reader stalls
 * nobody (finding 9 of issue 6), and a client that disconnects can come
 * back and resume.  What stays here is what is the service's:
 *
 * - the rules before anything is sent (limits; what the protocol cannot
 *   carry is a 400 and the sandbox stays usable: finding 10);
 * - linking each exec to its sandbox's registry entry, so that the exec
 *   can be found by id, goes with the sandbox, and is killed with it
 *   (retiring kills the sandbox, which ends every exec at once: nobody
 *   waits for anyone);
 * - who may stay away how long: a PLAIN exec dies with its caller
 *   (finding 13); a STREAM exec whose last reader left is cancelled after
 *   limits.exec_reattach_s unless a reader comes back (the reaper's sweep);
 * - the audit entry and the duration metric of each exec's end, written
 *   once by whoever notices the end first (a reader, the sweep, or the
 *   sandbox's finalisation);
 * - how many finished execs a live sandbox keeps readable (the newest
 *   FB_EXEC_KEEP_FINISHED, and only while their logs together stay within
 *   FB_EXEC_KEEP_FINISHED_OUTPUTS times the output cap, the newest one
 *   always; older ones are let go) and for how long: an
 *   unread finished exec's log (up to its output cap) is let go
 *   FB_EXEC_KEEP_FINISHED_S after its end, so memory held for late readers
 *   does not outlive their chance to come back.
 *
 * Locking: an exec's links, reference count and reader bookkeeping are
 * guarded by the registry lock (they change rarely).  The order is the
 * registry lock, then the sandbox's own lock (inside fb_exec_*); nothing
 * blocks under the registry lock, and audit entries are written outside it.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/internal.h"

struct core_exec {
    fb_core *c;
    fb_exec *x;                 /* the sandbox's exec: one reference, ours */
    char id[FB_EXEC_ID_MAX];
    char sandbox_id[32];
    char started_at[40];
    uint64_t t0_ns;
    fb_caller caller;           /* who started it: the audit entry of its end */
    fb_core_exec_mode mode;
    int stdin_w;                /* spec.stdin_pipe: the pipe's write end (-1: none or closed),
                                   guarded by stdin_lock */
    pthread_mutex_t stdin_lock;
    /* Under the registry lock: */
    core_sandbox *s;            /* while linked; NULL once let go */
    core_exec *next;            /* in s->execs */
    int refs;                   /* the sandbox's list's, and each handle's */
    int readers;                /* attached handles */
    uint64_t alone_since_ns;    /* STREAM with no reader: since when */
    bool cancelled;
    bool noted;                 /* the end is audited and counted */
    uint64_t noted_ns;          /* when (monotonic) */
};

/* A handle: what a caller holds. */
struct fb_core_exec {
    core_exec *cx;
    bool attached;              /* a reader (STREAM start, or opened to read) */
    bool plain_owner;           /* the PLAIN exec's starter: releasing it early kills it */
};

#define LOCK(c) pthread_mutex_lock(&(c)->reg.lock)
#define UNLOCK(c) pthread_mutex_unlock(&(c)->reg.lock)

static bool ended(core_exec *cx)
{
    return fb_exec_wait(cx->x, 0, NULL, NULL) != FB_E_TIMEOUT;
}

static void unref(core_exec *cx)
{
    fb_core *c = cx->c;
    LOCK(c);
    bool last = --cx->refs == 0;
    UNLOCK(c);
    if (!last)
        return;
    fb_exec_unref(cx->x);
    if (cx->stdin_w >= 0)
        close(cx->stdin_w);
    pthread_mutex_destroy(&cx->stdin_lock);
    free(cx);
}

/* Lets the oldest finished execs of cx's sandbox go, beyond the newest
 * FB_EXEC_KEEP_FINISHED or the memory budget.  (fb_exec_memory takes the
 * sandbox's lock: the registry lock comes first, as everywhere.) */
static void trim(fb_core *c, core_exec *cx)
{
    core_exec *drop = NULL;
    int kept = 0;
    uint64_t budget = FB_EXEC_KEEP_FINISHED_OUTPUTS * c->cfg->limits.max_output_bytes, held = 0;
    LOCK(c);
    core_sandbox *s = cx->s;
    for (core_exec **p = s ? &s->execs : NULL; p && *p;) {
        core_exec *e = *p;
        bool over = false;
        if (e->noted) {
            held += fb_exec_memory(e->x);
            over = ++kept > FB_EXEC_KEEP_FINISHED || (kept > 1 && held > budget);
        }
        if (over) {
            *p = e->next;
            e->s = NULL;
            e->next = drop; /* unlinked: next is free to chain the dropped */
            drop = e;
        } else {
            p = &e->next;
        }
    }
    UNLOCK(c);
    while (drop) {
        core_exec *e = drop;
        drop = e->next;
        unref(e);
    }
}

/* The end of the exec, audited and counted once, if it has ended. */
static void note_end(core_exec *cx)
{
    fb_core *c = cx->c;
    fb_exec_result res;
    fb_err e = {{0}};
    fb_errc code = fb_exec_wait(cx->x, 0, &res, &e);
    if (code == FB_E_TIMEOUT)
        return;
    LOCK(c);
    bool first = !cx->noted;
    cx->noted = true;
    if (first)
        cx->noted_ns = fb_time_monotonic_ns();
    bool cancelled = cx->cancelled;
    UNLOCK(c);
    if (!first)
        return;
    core_metrics_exec_duration(code == FB_OK ? (double)res.duration_ms / 1e3
                                             : (double)(fb_time_monotonic_ns() - cx->t0_ns) / 1e9);
    char why[640];
    if (code != FB_OK)
        snprintf(why, sizeof why, "%s: %s", cx->id, e.msg);
    else
        snprintf(why, sizeof why, "%s: %s", cx->id,
                 !res.started  ? "did not start"
                 : cancelled   ? "cancelled"
                 : res.timed_out ? "timed out"
                                 : "completed");
    fb_core_audit(c, &cx->caller, "exec", cx->sandbox_id, "exec", code == FB_OK ? "allowed" : "error", why);
    trim(c, cx);
}

static void cancel(core_exec *cx)
{
    LOCK(cx->c);
    cx->cancelled = true;
    UNLOCK(cx->c);
    fb_exec_cancel(cx->x);
}

/* ---- starting ------------------------------------------------------------------ */

/* The service's own limits; what the protocol can carry is the sandbox's
 * to say (fb_exec_start refuses it up front). */
static int check_spec(const fb_core_exec_spec *spec, fb_core_err *err)
{
    size_t argc = 0;
    while (spec->argv && spec->argv[argc] && argc <= FB_EXEC_MAX_ARGS)
        argc++;
    if (argc == 0 || argc > FB_EXEC_MAX_ARGS)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cmd\" must be a non-empty array of at most %d strings",
                            FB_EXEC_MAX_ARGS);
    if (!spec->argv[0][0])
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cmd\"[0] must be a non-empty string");
    if (spec->nenv > FB_EXEC_MAX_ENV || (spec->nenv && !spec->env))
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"env\" must be an object of at most %d strings",
                            FB_EXEC_MAX_ENV);
    for (size_t i = 0; i < spec->nenv; i++)
        if (!spec->env[i].key || !spec->env[i].value)
            return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"env\" keys must be names and values strings");
    if (spec->cwd && (spec->cwd[0] != '/' || strlen(spec->cwd) > 4096))
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cwd\" must be an absolute path");
    if (spec->timeout_s > FB_EXEC_MAX_TIMEOUT_S)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"timeout_s\" must be an integer between 1 and %d",
                            FB_EXEC_MAX_TIMEOUT_S);
    return 0;
}

/* What a refusal of fb_exec_start means to the caller. */
static int start_error(fb_errc code, const fb_err *e, fb_core_err *err)
{
    switch (code) {
    case FB_E_BAD_REQUEST:
    case FB_E_TOO_LARGE:
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "%s", e->msg);
    case FB_E_BUSY:
        return fb_core_fail(err, FB_CORE_CONFLICT, "%s", e->msg);
    case FB_E_NOMEM:
    case FB_E_RESOURCE:
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "%s", e->msg);
    default:
        return fb_core_fail(err, FB_CORE_SANDBOX_FAILED, "%s", e->msg);
    }
}

/* stdin as a memfd holding the bytes: the sandbox reads it to EOF. */
static int stage_stdin(const fb_core_exec_spec *spec)
{
    int fd = memfd_create("fb-stdin", MFD_CLOEXEC);
    if (fd >= 0 && (fb_write_all(fd, spec->stdin_data, spec->stdin_len) < 0 || lseek(fd, 0, SEEK_SET) < 0)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

int fb_core_exec_start(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const fb_core_exec_spec *spec,
                       fb_core_exec_mode mode, fb_core_exec **out, fb_core_err *err)
{
    if (!(ref->perm & FB_PERM_SANDBOXES_EXEC))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: exec with a reference not opened for it");
    if (check_spec(spec, err) < 0)
        return -1;
    core_sandbox *s = ref->s; /* ref keeps s and s->sb alive */
    LOCK(c);
    bool dying = s->dying;
    UNLOCK(c);
    if (dying)
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    fb_core_exec *h = calloc(1, sizeof *h);
    core_exec *cx = calloc(1, sizeof *cx);
    int in = -1, pipe_w = -1;
    if (spec->stdin_pipe) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) == 0) {
            in = p[0];
            pipe_w = p[1];
            fcntl(pipe_w, F_SETFL, O_NONBLOCK);
        }
    } else if (spec->stdin_data) {
        in = stage_stdin(spec);
    }
    if (!h || !cx || ((spec->stdin_data || spec->stdin_pipe) && in < 0)) {
        if (in >= 0)
            close(in);
        if (pipe_w >= 0)
            close(pipe_w);
        free(h);
        free(cx);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory staging the command");
    }
    fb_exec_req req = {
        .argv = spec->argv,
        .envv = spec->env,
        .nenv = spec->nenv,
        .cwd = spec->cwd,
        .timeout_ms = (spec->timeout_s ? spec->timeout_s : FB_EXEC_DEFAULT_TIMEOUT_S) * 1000,
        .stdin_fd = in,
    };
    fb_err ferr = {{0}};
    fb_errc code = fb_exec_start(s->sb, &req, &cx->x, &ferr); /* dups stdin */
    if (in >= 0)
        close(in);
    if (code != FB_OK) {
        if (pipe_w >= 0)
            close(pipe_w);
        free(h);
        free(cx);
        return start_error(code, &ferr, err);
    }
    cx->c = c;
    cx->stdin_w = pipe_w;
    pthread_mutex_init(&cx->stdin_lock, NULL);
    core_new_id("x_", cx->id, sizeof cx->id);
    memcpy(cx->sandbox_id, s->id, sizeof cx->sandbox_id);
    struct timespec now = fb_time_now_ts();
    fb_time_format(&now, cx->started_at);
    cx->t0_ns = fb_time_monotonic_ns();
    cx->caller = *caller;
    cx->caller.audit_inflight = NULL; /* the request's, awaited by its adapter; never the exec's */
    cx->caller.audit_overlap = false;
    cx->mode = mode;
    h->cx = cx;
    h->attached = mode == FB_EXEC_STREAM;
    h->plain_owner = mode == FB_EXEC_PLAIN;
    /* Linked even if the sandbox is retiring meanwhile: ref holds it, so
     * its finalisation (which lets every linked exec go) comes later. */
    LOCK(c);
    cx->refs = 2;
    cx->readers = h->attached;
    cx->s = s;
    cx->next = s->execs;
    s->execs = cx;
    UNLOCK(c);
    *out = h;
    return 0;
}

/* ---- finding and reading ------------------------------------------------------------ */

int fb_core_exec_open(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *exec_id, bool attach,
                      fb_core_exec **out, fb_core_err *err)
{
    (void)caller; /* the sandbox's permission was decided and audited when ref was opened */
    if (!(ref->perm & FB_PERM_SANDBOXES_EXEC))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: exec lookup with a reference not opened for it");
    fb_core_exec *h = calloc(1, sizeof *h);
    if (!h)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    core_exec *cx = NULL;
    LOCK(c);
    for (core_exec *e = ref->s->execs; e && exec_id; e = e->next)
        if (strcmp(e->id, exec_id) == 0) {
            cx = e;
            cx->refs++;
            cx->readers += attach;
            break;
        }
    UNLOCK(c);
    if (!cx) {
        free(h);
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such exec");
    }
    h->cx = cx;
    h->attached = attach;
    *out = h;
    return 0;
}

const char *fb_core_exec_id(const fb_core_exec *h)
{
    return h->cx->id;
}

int fb_core_exec_next(fb_core_exec *h, uint64_t pos, fb_exec_event *ev, int timeout_ms)
{
    int rc = fb_exec_next(h->cx->x, pos, ev, timeout_ms);
    if (rc == 1 && (ev->kind == FB_EXEC_EV_EXIT || ev->kind == FB_EXEC_EV_ERROR))
        note_end(h->cx);
    return rc;
}

bool fb_core_exec_wait(fb_core_exec *h, int timeout_ms)
{
    if (fb_exec_wait(h->cx->x, timeout_ms, NULL, NULL) == FB_E_TIMEOUT)
        return false;
    note_end(h->cx);
    return true;
}

void fb_core_exec_cancel(fb_core *c, fb_caller *caller, fb_core_exec *h)
{
    cancel(h->cx);
    if (caller)
        fb_core_audit(c, caller, "exec", h->cx->sandbox_id, "cancel", "allowed", h->cx->id);
}

bool fb_core_exec_stop(fb_core_exec *h, int timeout_ms)
{
    cancel(h->cx);
    for (int waited = 0; waited < timeout_ms; waited += 5) {
        if (fb_exec_wait(h->cx->x, 5, NULL, NULL) != FB_E_TIMEOUT)
            return true;
        fb_err e = {{0}};
        (void)fb_exec_signal(h->cx->x, SIGKILL, &e); /* not running any more: nothing sent */
    }
    return ended(h->cx);
}

void fb_core_exec_status_of(fb_core_exec *h, fb_core_exec_status *st)
{
    core_exec *cx = h->cx;
    memset(st, 0, sizeof *st);
    memcpy(st->id, cx->id, sizeof st->id);
    memcpy(st->sandbox_id, cx->sandbox_id, sizeof st->sandbox_id);
    memcpy(st->started_at, cx->started_at, sizeof st->started_at);
    fb_err e = {{0}};
    st->code = fb_exec_wait(cx->x, 0, &st->result, &e);
    st->ended = st->code != FB_E_TIMEOUT;
    if (!st->ended)
        st->code = FB_OK;
    else if (st->code != FB_OK)
        snprintf(st->message, sizeof st->message, "%s", e.msg);
    if (st->ended)
        note_end(cx);
}

void fb_core_exec_release(fb_core_exec *h)
{
    if (!h)
        return;
    core_exec *cx = h->cx;
    fb_core *c = cx->c;
    bool done = ended(cx);
    if (h->plain_owner && !done)
        cancel(cx); /* its caller went away: the command goes too (finding 13) */
    bool cancel_now = false;
    if (h->attached) {
        LOCK(c);
        if (--cx->readers == 0 && cx->mode == FB_EXEC_STREAM && !done) {
            cx->alone_since_ns = fb_time_monotonic_ns();
            cancel_now = c->cfg->limits.exec_reattach_s == 0 && !cx->cancelled;
        }
        UNLOCK(c);
    }
    if (cancel_now)
        cancel(cx);
    if (done)
        note_end(cx);
    unref(cx);
    free(h);
}

/* ---- the reaper's side --------------------------------------------------------------- */

#define SWEEP_MAX 64

void core_execs_sweep(fb_core *c)
{
    uint64_t now = fb_time_monotonic_ns();
    uint64_t grace = c->cfg->limits.exec_reattach_s * 1000000000ull;
    uint64_t keep = FB_EXEC_KEEP_FINISHED_S * 1000000000ull;
    core_exec *over[SWEEP_MAX];
    core_exec *drop = NULL;
    size_t n = 0;
    LOCK(c);
    for (size_t i = 0; i < c->reg.n; i++) {
        core_sandbox *s = c->reg.items[i];
        for (core_exec **p = &s->execs; *p;) {
            core_exec *e = *p;
            if (e->noted) {
                if (e->readers == 0 && now - e->noted_ns >= keep) {
                    *p = e->next; /* its late readers had their chance */
                    e->s = NULL;
                    e->next = drop;
                    drop = e;
                    continue;
                }
            } else if (ended(e)) {
                if (n < SWEEP_MAX) { /* the rest next round */
                    e->refs++;
                    over[n++] = e;
                }
            } else if (e->mode == FB_EXEC_STREAM && e->readers == 0 && !e->cancelled &&
                       now - e->alone_since_ns >= grace) {
                /* Nobody came back for it: it does not run on. */
                e->cancelled = true;
                fb_exec_cancel(e->x);
                fb_log("info", e->caller.request_id, "exec cancelled: its stream was abandoned",
                       json_pack("{s:s, s:s}", "sandbox", e->sandbox_id, "exec", e->id));
            }
            p = &e->next;
        }
    }
    UNLOCK(c);
    for (size_t i = 0; i < n; i++) {
        note_end(over[i]);
        unref(over[i]);
    }
    while (drop) {
        core_exec *e = drop;
        drop = e->next;
        unref(e);
    }
}

void core_execs_forget(fb_core *c, core_sandbox *s)
{
    LOCK(c);
    core_exec *list = s->execs;
    s->execs = NULL;
    for (core_exec *e = list; e; e = e->next)
        e->s = NULL;
    UNLOCK(c);
    while (list) {
        core_exec *e = list;
        list = e->next;
        note_end(e); /* the sandbox is destroyed: every exec has ended */
        unref(e);
    }
}

/* ---- stdin kept open ---------------------------------------------------------------- */

int fb_core_exec_write_stdin(fb_core_exec *x, const void *data, size_t len, int timeout_ms, fb_core_err *err)
{
    core_exec *cx = x->cx;
    pthread_mutex_lock(&cx->stdin_lock);
    const unsigned char *p = data;
    size_t done = 0;
    int rc = 0;
    uint64_t deadline = fb_time_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (done < len) {
        if (cx->stdin_w < 0 || ended(cx)) {
            rc = fb_core_fail(err, FB_CORE_CONFLICT, "the command's stdin is closed");
            break;
        }
        ssize_t n = write(cx->stdin_w, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR) {
            rc = fb_core_fail(err, FB_CORE_CONFLICT, "the command's stdin is closed");
            break;
        }
        uint64_t now = fb_time_monotonic_ns();
        if (now >= deadline) {
            rc = fb_core_fail(err, FB_CORE_UNAVAILABLE, "the command is not reading its stdin");
            break;
        }
        struct pollfd pf = {.fd = cx->stdin_w, .events = POLLOUT};
        poll(&pf, 1, 100);
    }
    pthread_mutex_unlock(&cx->stdin_lock);
    return rc;
}

void fb_core_exec_close_stdin(fb_core_exec *x)
{
    core_exec *cx = x->cx;
    pthread_mutex_lock(&cx->stdin_lock);
    if (cx->stdin_w >= 0)
        close(cx->stdin_w);
    cx->stdin_w = -1;
    pthread_mutex_unlock(&cx->stdin_lock);
}

bool fb_core_exec_has_stdin(fb_core_exec *x)
{
    core_exec *cx = x->cx;
    pthread_mutex_lock(&cx->stdin_lock);
    bool open = cx->stdin_w >= 0;
    pthread_mutex_unlock(&cx->stdin_lock);
    return open;
}

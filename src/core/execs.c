/*
 * execs.c - the exec service: a command in a sandbox as an object with a
 * life of its own (core.h).
 *
 * An exec runs on its own thread and owns a reference to its sandbox for
 * exactly as long as the command runs.  Whoever asked for it (an HTTP
 * request, later a task) holds a second reference to the exec object only,
 * never to the sandbox, so a consumer that stops reading cannot keep a
 * sandbox alive: retiring the sandbox kills it and cancels its execs,
 * which wakes a producer waiting for buffer space.
 *
 * Output goes one of two ways: COLLECT gathers it for one answer at the
 * end (the sandbox caps it); STREAM queues it as numbered events in a
 * bounded buffer that the consumer drains with fb_core_exec_next.  When the
 * buffer is full the command waits (back-pressure, as a pipe would), but
 * only until it is cancelled.
 *
 * Today the command runs through the synchronous fb_sandbox_exec; when the
 * sandbox supervisor's asynchronous execs arrive, the thread below is what
 * goes, and the event buffer becomes a view of the sandbox's own event log.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/internal.h"
#include "proto/proto.h"

/* Most output a STREAM exec queues for a slow reader. */
#define STREAM_BUFFER_BYTES (1u << 20)
/* Room kept in a protocol header for what is not argv, env or cwd. */
#define HEADER_SLACK 1024u

typedef struct ev_node {
    fb_core_exec_event ev;
    struct ev_node *next;
} ev_node;

typedef struct outbuf {
    char *data;
    size_t len, cap;
    bool lost;         /* memory ran out: the answer says truncated */
} outbuf;

struct core_exec {
    fb_core *c;
    core_sandbox *s;
    core_exec *next;              /* in s->execs, under the registry lock */
    fb_caller caller;             /* for the audit entry at the end */
    char sandbox_id[32];
    fb_core_exec_mode mode;
    char **argv, **env, *cwd;
    int stdin_fd;
    uint64_t timeout_ms;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    volatile sig_atomic_t cancel;
    int refs;                     /* the thread's and the consumer's */
    bool done;
    outbuf out, err;              /* COLLECT */
    ev_node *head, *tail;         /* STREAM */
    size_t queued;
    uint64_t next_seq;
    fb_exec_result res;
    fb_core_err ferr;
    int rc;
};

core_exec **core_exec_next_link(core_exec *x)
{
    return &x->next;
}

void core_exec_cancel_locked(core_exec *x)
{
    pthread_mutex_lock(&x->lock);
    x->cancel = 1;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
}

void fb_core_exec_cancel(fb_core_exec *xp)
{
    core_exec_cancel_locked((core_exec *)xp);
}

static void free_strv(char **v)
{
    for (char **p = v; p && *p; p++)
        free(*p);
    free(v);
}

static void exec_free(core_exec *x)
{
    free_strv(x->argv);
    free_strv(x->env);
    free(x->cwd);
    if (x->stdin_fd >= 0)
        close(x->stdin_fd);
    free(x->out.data);
    free(x->err.data);
    for (ev_node *n = x->head, *next; n; n = next) {
        next = n->next;
        free(n->ev.data);
        free(n);
    }
    pthread_mutex_destroy(&x->lock);
    pthread_cond_destroy(&x->cond);
    free(x);
}

static void exec_unref(core_exec *x)
{
    pthread_mutex_lock(&x->lock);
    bool last = --x->refs == 0;
    pthread_mutex_unlock(&x->lock);
    if (last)
        exec_free(x);
}

static void outbuf_add(outbuf *b, const void *data, size_t len)
{
    if (b->lost)
        return;
    if (b->len + len + 1 > b->cap) {
        size_t ncap = b->cap ? b->cap : 4096;
        while (ncap < b->len + len + 1)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (!nd) {
            b->lost = true; /* said in the answer (truncated), not dropped silently */
            return;
        }
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

/* Queues one event; the caller holds x->lock.  false: out of memory. */
static bool push_event(core_exec *x, fb_core_event_kind kind, const void *data, size_t len)
{
    ev_node *n = calloc(1, sizeof *n);
    char *copy = len ? malloc(len) : NULL;
    if (!n || (len && !copy)) {
        free(n);
        free(copy);
        return false;
    }
    if (len)
        memcpy(copy, data, len);
    n->ev = (fb_core_exec_event){.seq = ++x->next_seq, .kind = kind, .data = copy, .len = len};
    if (x->tail)
        x->tail->next = n;
    else
        x->head = n;
    x->tail = n;
    x->queued += len;
    pthread_cond_broadcast(&x->cond);
    return true;
}

static void on_output(void *ctx, int stream, const void *data, size_t len)
{
    core_exec *x = ctx;
    pthread_mutex_lock(&x->lock);
    if (x->mode == FB_EXEC_COLLECT) {
        outbuf_add(stream == FB_STREAM_STDOUT ? &x->out : &x->err, data, len);
    } else {
        /* Back-pressure, bounded by cancellation: a reader that stops
         * reading stalls only its own command, and only until the
         * sandbox is deleted or expires (which cancels this). */
        while (x->queued > 0 && x->queued + len > STREAM_BUFFER_BYTES && !x->cancel)
            pthread_cond_wait(&x->cond, &x->lock);
        if (!x->cancel && !push_event(x, stream == FB_STREAM_STDOUT ? FB_CORE_EV_STDOUT : FB_CORE_EV_STDERR, data, len))
            x->res.truncated = true;
    }
    pthread_mutex_unlock(&x->lock);
}

static void *exec_main(void *arg)
{
    core_exec *x = arg;
    fb_core *c = x->c;
    fb_exec_req xr = {
        .argv = (const char *const *)x->argv,
        .env = (const char *const *)x->env,
        .cwd = x->cwd,
        .timeout_ms = x->timeout_ms,
        .stdin_fd = x->stdin_fd,
        .on_output = on_output,
        .ctx = x,
        .cancel = &x->cancel,
    };
    fb_exec_result res;
    fb_err ferr = {{0}};
    uint64_t t0 = fb_now_ns();
    pthread_mutex_lock(&x->s->use);
    int rc = x->cancel ? fb_fail(&ferr, "the exec was cancelled before it started")
                       : fb_sandbox_exec(x->s->sb, &xr, &res, &ferr);
    pthread_mutex_unlock(&x->s->use);
    core_metrics_exec_duration((double)(fb_now_ns() - t0) / 1e9);
    core_registry_unlink_exec(&c->reg, x->s, x);
    core_registry_put(c, x->s); /* the sandbox may be finalised here */
    x->s = NULL;
    fb_core_audit(c, &x->caller, "exec", x->sandbox_id, "exec", rc < 0 ? "error" : "allowed",
                  rc < 0 ? ferr.msg : (res.timed_out ? "timed out" : "completed"));
    pthread_mutex_lock(&x->lock);
    x->rc = rc;
    if (rc < 0) {
        fb_core_fail(&x->ferr, FB_CORE_SANDBOX_FAILED, "%s", ferr.msg);
    } else {
        bool lost = x->res.truncated || x->out.lost || x->err.lost;
        x->res = res;
        x->res.truncated |= lost;
    }
    if (x->mode == FB_EXEC_STREAM)
        push_event(x, FB_CORE_EV_EXIT, NULL, 0);
    x->done = true;
    pthread_cond_broadcast(&x->cond);
    pthread_mutex_unlock(&x->lock);
    exec_unref(x);
    __atomic_sub_fetch(&c->exec_threads, 1, __ATOMIC_SEQ_CST); /* c is not touched after this */
    return NULL;
}

/* The limits of one exec, checked here before anything reaches the
 * sandbox, so that a request the protocol cannot carry is a 400 and the
 * sandbox stays usable (finding 10 of issue 6).  The encoded size is
 * measured the way the header will carry it. */
static int check_spec(const fb_core_exec_spec *spec, fb_core_err *err)
{
    size_t argc = 0, envc = 0;
    while (spec->argv && spec->argv[argc])
        argc++;
    if (argc == 0 || argc > FB_EXEC_MAX_ARGS)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cmd\" must be a non-empty array of at most %d strings",
                            FB_EXEC_MAX_ARGS);
    if (!spec->argv[0][0])
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cmd\"[0] must be a non-empty string");
    while (spec->names && spec->names[envc])
        envc++;
    if (envc > FB_EXEC_MAX_ENV)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"env\" must be an object of at most %d strings",
                            FB_EXEC_MAX_ENV);
    for (size_t i = 0; i < envc; i++)
        if (!spec->names[i][0] || strchr(spec->names[i], '=') || !spec->values[i])
            return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"env\" keys must be names and values strings");
    if (spec->cwd && (spec->cwd[0] != '/' || strlen(spec->cwd) > 4096))
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"cwd\" must be an absolute path");
    if (spec->timeout_s > FB_EXEC_MAX_TIMEOUT_S)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"timeout_s\" must be an integer between 1 and %d",
                            FB_EXEC_MAX_TIMEOUT_S);
    /* moves to proto: the header's limits defined once, with a typed too_large */
    json_t *h = json_object(), *argv = json_array(), *env = json_object();
    json_object_set_new(h, "argv", argv);
    json_object_set_new(h, "env", env);
    for (size_t i = 0; i < argc; i++)
        json_array_append_new(argv, json_string(spec->argv[i]));
    for (size_t i = 0; i < envc; i++)
        json_object_set_new(env, spec->names[i], json_string(spec->values[i]));
    if (spec->cwd)
        json_object_set_new(h, "cwd", json_string(spec->cwd));
    char *text = json_dumps(h, JSON_COMPACT);
    json_decref(h);
    size_t n = text ? strlen(text) : SIZE_MAX;
    free(text);
    if (n == SIZE_MAX)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "the command or its environment is not valid text");
    if (n > FB_PROTO_MAX_HEADER - HEADER_SLACK)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST,
                            "the command, its environment and working directory take %zu bytes encoded; "
                            "at most %u are allowed",
                            n, FB_PROTO_MAX_HEADER - HEADER_SLACK);
    return 0;
}

static char **strv_dup(const char *const *v, size_t n)
{
    char **o = calloc(n + 1, sizeof *o);
    for (size_t i = 0; o && i < n; i++)
        if (!(o[i] = strdup(v[i]))) {
            free_strv(o);
            return NULL;
        }
    return o;
}

static int fill(core_exec *x, const fb_core_exec_spec *spec, fb_core_err *err)
{
    size_t argc = 0, envc = 0;
    while (spec->argv[argc])
        argc++;
    while (spec->names && spec->names[envc])
        envc++;
    x->argv = strv_dup(spec->argv, argc);
    x->env = calloc(envc + 1, sizeof *x->env);
    if (!x->argv || !x->env)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    for (size_t i = 0; i < envc; i++)
        if (asprintf(&x->env[i], "%s=%s", spec->names[i], spec->values[i]) < 0) {
            x->env[i] = NULL;
            return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
        }
    if (spec->cwd && !(x->cwd = strdup(spec->cwd)))
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    x->timeout_ms = (spec->timeout_s ? spec->timeout_s : FB_EXEC_DEFAULT_TIMEOUT_S) * 1000;
    if (spec->stdin_data) {
        /* A memfd holding the bytes: read to EOF like a file. */
        x->stdin_fd = memfd_create("fb-stdin", MFD_CLOEXEC);
        if (x->stdin_fd < 0 || fb_write_all(x->stdin_fd, spec->stdin_data, spec->stdin_len) < 0 ||
            lseek(x->stdin_fd, 0, SEEK_SET) < 0)
            return fb_core_fail(err, FB_CORE_UNAVAILABLE, "cannot stage stdin");
    }
    return 0;
}

int fb_core_exec_start(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const fb_core_exec_spec *spec, fb_core_exec_mode mode,
                       fb_core_exec **out, fb_core_err *err)
{
    if (!(ref->perm & FB_PERM_SANDBOXES_EXEC))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: exec with a reference not opened for it");
    if (check_spec(spec, err) < 0)
        return -1;
    core_exec *x = calloc(1, sizeof *x);
    if (!x)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    pthread_mutex_init(&x->lock, NULL);
    pthread_cond_init(&x->cond, NULL);
    x->stdin_fd = -1;
    x->c = c;
    x->mode = mode;
    x->caller = *caller;
    memcpy(x->sandbox_id, ref->s->id, sizeof x->sandbox_id);
    if (fill(x, spec, err) < 0) {
        exec_free(x);
        return -1;
    }
    core_sandbox *s = core_registry_get(&c->reg, ref->s->id);
    if (s != ref->s) {
        if (s)
            core_registry_put(c, s);
        exec_free(x);
        return fb_core_fail(err, FB_CORE_NOT_FOUND, "no such resource");
    }
    x->s = s;
    x->refs = 2;
    core_registry_link_exec(&c->reg, s, x);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    __atomic_add_fetch(&c->exec_threads, 1, __ATOMIC_SEQ_CST);
    int rc = pthread_create(&t, &attr, exec_main, x);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        __atomic_sub_fetch(&c->exec_threads, 1, __ATOMIC_SEQ_CST);
        core_registry_unlink_exec(&c->reg, s, x);
        core_registry_put(c, s);
        exec_free(x);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "cannot start the exec thread");
    }
    *out = (fb_core_exec *)x;
    return 0;
}

/* The absolute CLOCK_REALTIME time timeout_ms from now, for timed waits. */
static struct timespec deadline_after(int timeout_ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += timeout_ms / 1000;
    t.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

int fb_core_exec_next(fb_core_exec *xp, uint64_t after_seq, fb_core_exec_event *ev, int timeout_ms)
{
    core_exec *x = (core_exec *)xp;
    struct timespec until = deadline_after(timeout_ms);
    pthread_mutex_lock(&x->lock);
    for (;;) {
        /* What the consumer has seen is dropped: the buffer holds only
         * what is still to be read. */
        while (x->head && x->head->ev.seq <= after_seq) {
            ev_node *n = x->head;
            x->head = n->next;
            if (!x->head)
                x->tail = NULL;
            x->queued -= n->ev.len;
            free(n->ev.data);
            free(n);
            pthread_cond_broadcast(&x->cond);
        }
        if (x->head) {
            ev_node *n = x->head;
            *ev = n->ev;
            ev->data = NULL;
            if (n->ev.len && (ev->data = malloc(n->ev.len)))
                memcpy(ev->data, n->ev.data, n->ev.len);
            else if (n->ev.len)
                ev->len = 0;
            pthread_mutex_unlock(&x->lock);
            return 1;
        }
        if (x->done) {
            pthread_mutex_unlock(&x->lock);
            return -1;
        }
        if (pthread_cond_timedwait(&x->cond, &x->lock, &until) == ETIMEDOUT) {
            pthread_mutex_unlock(&x->lock);
            return 0;
        }
    }
}

bool fb_core_exec_wait(fb_core_exec *xp, int timeout_ms)
{
    core_exec *x = (core_exec *)xp;
    struct timespec until = deadline_after(timeout_ms);
    pthread_mutex_lock(&x->lock);
    while (!x->done && pthread_cond_timedwait(&x->cond, &x->lock, &until) != ETIMEDOUT)
        ;
    bool done = x->done;
    pthread_mutex_unlock(&x->lock);
    return done;
}

int fb_core_exec_outcome(fb_core_exec *xp, fb_exec_result *res, fb_core_err *err)
{
    core_exec *x = (core_exec *)xp;
    pthread_mutex_lock(&x->lock);
    int rc = x->done ? x->rc : fb_core_fail(&x->ferr, FB_CORE_INTERNAL, "internal: the exec has not ended");
    if (rc < 0 && err)
        *err = x->ferr;
    if (rc == 0)
        *res = x->res;
    pthread_mutex_unlock(&x->lock);
    return rc;
}

void fb_core_exec_output(fb_core_exec *xp, const char **out, size_t *out_len, const char **errs, size_t *err_len)
{
    core_exec *x = (core_exec *)xp;
    *out = x->out.data ? x->out.data : "";
    *out_len = x->out.len;
    *errs = x->err.data ? x->err.data : "";
    *err_len = x->err.len;
}

void fb_core_exec_release(fb_core_exec *xp)
{
    core_exec *x = (core_exec *)xp;
    if (!x)
        return;
    core_exec_cancel_locked(x); /* harmless once it has ended */
    exec_unref(x);
}

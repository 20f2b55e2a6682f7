/*
 * execlog.c - asynchronous execs and their event logs (sandbox.h).
 *
 * An exec is started with one frame and then lives on its own: the I/O
 * thread appends what the agent sends to the exec's log, any number of
 * consumers read the log from any position, and the log stays until the
 * last reference to the exec goes - so an HTTP client can disconnect and a
 * new one resume where it left off, and nobody's slowness reaches the I/O
 * thread.
 *
 * The log is bounded by the exec's output cap: output bytes live in one
 * arena of at most max_output + FB_OUTPUT_MARKER_SLACK bytes (the host
 * enforces the cap the agent promises: more ends the sandbox), and events
 * are small descriptors into it.  Output of the same stream that arrives
 * back to back extends the last event instead of adding one; positions are
 * per byte, so a reader that already had the first part simply reads on.
 * Descriptors are capped at 1024 + cap/64; a command that alternates
 * streams more often than that keeps its bytes counted in one explicit
 * DROPPED event instead.  An allocation failure ends the exec with
 * FB_E_NOMEM (and kills the command); nothing is lost silently.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox/supervisor.h"

#define EXEC_SLACK_MS FB_EXEC_SLACK_MS /* proto/msg.h */
#define MAX_READ_CHUNK (64u * 1024u)

enum { EV_DROPPED = FB_EXEC_EV_DROPPED };

struct xev {
    uint64_t pos;
    uint32_t off; /* into data (output) */
    uint32_t len; /* output bytes; 1 position for DROPPED */
    uint8_t kind;
};

struct fb_exec {
    fb_sandbox *sb;            /* holds a reference */
    uint64_t id;
    unsigned refs;             /* under sb->mu */
    struct fb_exec *next;      /* in sb->execs while running */
    bool running;
    int stdin_fd;
    uint64_t in_flight;
    uint64_t deadline_ns, oom_before;
    uint64_t out_cap, out_seen;
    bool cancel_sent;
    uint8_t *data;
    size_t data_len, data_cap;
    struct xev *ev;
    size_t nev, ev_cap, max_ev;
    bool dropping;
    uint64_t dropped;          /* bytes counted in the DROPPED event */
    uint64_t end_pos;          /* position of the next event */
    bool done;                 /* the terminal event is at end_pos */
    fb_errc code;
    char msg[512];
    fb_exec_result res;
};

/* ---- references -------------------------------------------------------------- */

static void free_exec_locked(fb_exec *x)
{
    if (x->stdin_fd >= 0)
        close(x->stdin_fd);
    free(x->data);
    free(x->ev);
    free(x);
}

fb_exec *fb_exec_ref(fb_exec *x)
{
    pthread_mutex_lock(&x->sb->mu);
    x->refs++;
    pthread_mutex_unlock(&x->sb->mu);
    return x;
}

void fb_exec_unref(fb_exec *x)
{
    if (!x)
        return;
    fb_sandbox *sb = x->sb;
    pthread_mutex_lock(&sb->mu);
    if (--x->refs > 0) {
        pthread_mutex_unlock(&sb->mu);
        return;
    }
    free_exec_locked(x);
    fb_sup_unref_unlock(sb);
}

uint64_t fb_exec_id(const fb_exec *x)
{
    return x->id;
}

size_t fb_exec_memory(fb_exec *x)
{
    pthread_mutex_lock(&x->sb->mu);
    size_t n = x->data_cap + x->ev_cap * sizeof *x->ev;
    pthread_mutex_unlock(&x->sb->mu);
    return n;
}

/* ---- the end of an exec -------------------------------------------------------- */

static void send_signal_locked(fb_exec *x, int sig)
{
    fb_err err;
    json_t *h = fb_msg_encode_signal(x->id, &(fb_msg_signal){.signal = sig}, &err);
    (void)fb_sup_send_locked(x->sb, h, NULL, 0, &err);
}

/* Records the terminal event and lets the sandbox forget the exec. */
static void finish_locked(fb_exec *x, fb_errc code, const char *msg, const fb_exec_result *res)
{
    fb_sandbox *sb = x->sb;
    if (x->done)
        return;
    x->done = true;
    x->code = code;
    snprintf(x->msg, sizeof x->msg, "%s", msg ? msg : "");
    if (res)
        x->res = *res;
    for (fb_exec **p = &sb->execs; *p; p = &(*p)->next)
        if (*p == x) {
            *p = x->next;
            sb->nexecs--;
            break;
        }
    x->running = false;
    if (x->stdin_fd >= 0) {
        close(x->stdin_fd);
        x->stdin_fd = -1;
    }
    fb_sup_notify_locked(sb);
    /* The sandbox's reference; the sandbox itself is referenced by its
     * owner or by the caller of whoever ends the exec, so never freed here. */
    if (--x->refs == 0) {
        free_exec_locked(x);
        sb->refs--;
    }
}

/* The host ran out of memory for this exec: end it, and its command. */
static void fail_nomem_locked(fb_exec *x, const char *what)
{
    char msg[200];
    snprintf(msg, sizeof msg, "out of memory on the host %s; the command was killed", what);
    send_signal_locked(x, SIGKILL);
    finish_locked(x, FB_E_NOMEM, msg, NULL);
}

void fb_xlog_fail_all_locked(fb_sandbox *sb, fb_errc code, const char *msg)
{
    while (sb->execs)
        finish_locked(sb->execs, code, msg, NULL);
}

fb_exec *fb_xlog_find_locked(fb_sandbox *sb, uint64_t id)
{
    for (fb_exec *x = sb->execs; x; x = x->next)
        if (x->id == id)
            return x;
    return NULL;
}

/* ---- appending --------------------------------------------------------------- */

static bool grow(void **p, size_t *cap, size_t need, size_t elem, size_t max)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need)
        ncap *= 2;
    if (ncap > max)
        ncap = max;
    if (ncap < need)
        return false;
    void *n = realloc(*p, ncap * elem);
    if (!n)
        return false;
    *p = n;
    *cap = ncap;
    return true;
}

static void log_output_locked(fb_exec *x, int stream, const uint8_t *p, size_t n)
{
    if (n == 0 || x->done)
        return;
    struct xev *last = x->nev ? &x->ev[x->nev - 1] : NULL;
    if (x->dropping) {
        x->dropped += n;
        fb_sup_notify_locked(x->sb);
        return;
    }
    bool merge = last && last->kind == stream && last->off + last->len == x->data_len;
    if (!merge && x->nev >= x->max_ev) {
        /* Out of descriptors: one explicit DROPPED event from here on. */
        if (!grow((void **)&x->ev, &x->ev_cap, x->nev + 1, sizeof *x->ev, x->max_ev + 1))
            return fail_nomem_locked(x, "for the output log");
        x->ev[x->nev++] = (struct xev){.pos = x->end_pos, .off = 0, .len = 1, .kind = EV_DROPPED};
        x->end_pos += 1;
        x->dropping = true;
        return log_output_locked(x, stream, p, n);
    }
    if (!grow((void **)&x->data, &x->data_cap, x->data_len + n, 1, x->out_cap))
        return fail_nomem_locked(x, "for command output");
    if (!merge) {
        if (!grow((void **)&x->ev, &x->ev_cap, x->nev + 1, sizeof *x->ev, x->max_ev + 1))
            return fail_nomem_locked(x, "for the output log");
        x->ev[x->nev++] = (struct xev){.pos = x->end_pos, .off = (uint32_t)x->data_len, .len = 0,
                                       .kind = (uint8_t)stream};
        last = &x->ev[x->nev - 1];
    }
    memcpy(x->data + x->data_len, p, n);
    x->data_len += n;
    last->len += (uint32_t)n;
    x->end_pos += n;
    fb_sup_notify_locked(x->sb);
}

/* ---- frames from the agent (I/O thread) ------------------------------------------ */

static void on_exit_locked(fb_sandbox *sb, fb_exec *x, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_exit m;
    if (fb_msg_decode_exit(f, &m, &err) < 0) {
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a malformed exit: %s", sb->id, err.msg);
        return;
    }
    fb_exec_result r = {.started = m.started, .exit_code = m.started && !m.signal ? m.code : -1,
                        .signal = m.signal, .timed_out = m.timed_out, .oom = m.oom,
                        .truncated = m.truncated, .duration_ms = m.duration_ms};
    if (!m.started) {
        r.code = m.error;
        r.exit_code = m.code;
        snprintf(r.error, sizeof r.error, "%s", fb_errc_name(m.error));
        snprintf(r.message, sizeof r.message, "%s", m.message);
    }
    /* The agent's guess at OOM is for a VM's own kernel; in a jail the
     * cgroup's counter is the authority. */
    if (sb->ops == &fb_backend_jail)
        r.oom = r.signal == SIGKILL && !r.timed_out && fb_cgroup_oom_kills(&sb->cg) > x->oom_before;
    finish_locked(x, FB_OK, "", &r);
}

void fb_xlog_frame_locked(fb_sandbox *sb, fb_exec *x, fb_msg_type t, const fb_frame *f)
{
    fb_err err = {{0}};
    switch (t) {
    case FB_MSG_STDOUT:
    case FB_MSG_STDERR:
        if (fb_msg_decode_simple(f, &err) < 0) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent bad output: %s", sb->id, err.msg);
            return;
        }
        x->out_seen += f->payload_len;
        if (x->out_seen > x->out_cap) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent more output than its cap; ending it",
                              sb->id);
            return;
        }
        log_output_locked(x, t == FB_MSG_STDOUT ? FB_STREAM_STDOUT : FB_STREAM_STDERR, f->payload,
                          f->payload_len);
        return;
    case FB_MSG_STDIN_ACK: {
        fb_msg_stdin_ack m;
        if (fb_msg_decode_stdin_ack(f, &m, &err) < 0) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a bad stdin_ack: %s", sb->id, err.msg);
            return;
        }
        x->in_flight = m.bytes > x->in_flight ? 0 : x->in_flight - m.bytes;
        return;
    }
    case FB_MSG_EXIT:
        on_exit_locked(sb, x, f);
        return;
    case FB_MSG_ERROR: {
        fb_msg_error m;
        if (fb_msg_decode_error(f, &m, &err) < 0) {
            fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a malformed error: %s", sb->id, err.msg);
            return;
        }
        char msg[600];
        snprintf(msg, sizeof msg, "%s (%s)", m.message, fb_errc_name(m.code));
        finish_locked(x, m.code, msg, NULL);
        return;
    }
    default:
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a %s frame for exec %llu", sb->id,
                          fb_msg_type_name(t), (unsigned long long)x->id);
    }
}

int fb_xlog_pollfds_locked(fb_sandbox *sb, struct pollfd *fds, int max, fb_exec **owner)
{
    int n = 0;
    for (fb_exec *x = sb->execs; x && n < max; x = x->next)
        if (x->stdin_fd >= 0 && x->in_flight < FB_STDIN_WINDOW) {
            fds[n] = (struct pollfd){.fd = x->stdin_fd, .events = POLLIN};
            owner[n++] = x;
        }
    return n;
}

void fb_xlog_stdin_ready_locked(fb_sandbox *sb, fb_exec *x)
{
    if (x->stdin_fd < 0 || x->done)
        return;
    /* Read only what the channel can take now: bytes read from the fd and
     * then refused by a full queue would be lost (and the command would
     * wait for an EOF that never comes).  Nothing else sends between this
     * check and the send below: both run under sb->mu. */
    if (fb_chan_queued(&sb->chan) + FB_PROTO_MAX_HEADER + MAX_READ_CHUNK > FB_CHAN_MAX_QUEUED)
        return;
    /* On the I/O thread's stack (8 MiB), not thread-local: every thread of
     * the process gets a zeroed copy of the static TLS when it starts, and
     * 64 KiB of it made each thread's creation fault in and clear 16 pages
     * (about 0.05 ms; `forgebox run` starts two threads per sandbox). */
    uint8_t buf[MAX_READ_CHUNK];
    ssize_t r = read(x->stdin_fd, buf, sizeof buf);
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    fb_err err;
    fb_msg_stdin m = {.eof = r <= 0};
    json_t *h = fb_msg_encode_stdin(x->id, &m, &err);
    if (fb_sup_send_locked(sb, h, buf, r > 0 ? (size_t)r : 0, &err) != FB_OK)
        r = 0; /* the sandbox ended (room was checked above): stdin is over */
    if (r <= 0) {
        close(x->stdin_fd);
        x->stdin_fd = -1;
        return;
    }
    x->in_flight += (uint64_t)r;
}

int fb_xlog_tick_locked(fb_sandbox *sb, uint64_t now)
{
    int timeout = -1;
    for (fb_exec *x = sb->execs; x; x = x->next) {
        if (now >= x->deadline_ns) {
            fb_sup_die_locked(sb, FB_E_UNRESPONSIVE,
                              "sandbox %s stopped responding (no exit after the timeout)", sb->id);
            return 0;
        }
        uint64_t ms = (x->deadline_ns - now) / 1000000ull + 1;
        if (timeout < 0 || ms < (uint64_t)timeout)
            timeout = ms > INT32_MAX ? INT32_MAX : (int)ms;
    }
    return timeout;
}

/* ---- starting ---------------------------------------------------------------------- */

/* The request as a message: argv and the env pairs go as they are. */
static fb_errc build_msg(const fb_exec_req *req, fb_msg_exec *m, fb_err *err)
{
    memset(m, 0, sizeof *m);
    if (!req->argv || !req->argv[0]) {
        fb_fail(err, "no command given");
        return FB_E_BAD_REQUEST;
    }
    m->argv = req->argv;
    while (req->argv[m->argc] && m->argc <= FB_MAX_ARGV)
        m->argc++;
    m->env = req->envv;
    m->nenv = req->envv ? req->nenv : 0;
    m->cwd = req->cwd;
    m->timeout_ms = req->timeout_ms;
    m->max_output = req->max_output;
    m->stdin_pipe = req->stdin_fd >= 0;
    return FB_OK;
}

fb_errc fb_exec_start(fb_sandbox *sb, const fb_exec_req *req, fb_exec **out, fb_err *err)
{
    *out = NULL;
    fb_msg_exec m;
    uint64_t id = 0;
    fb_errc code = build_msg(req, &m, err);
    if (code == FB_OK) {
        pthread_mutex_lock(&sb->mu);
        code = fb_sup_begin_locked(sb, true, &id, err);
        pthread_mutex_unlock(&sb->mu);
    }
    /* Encoded before anything is queued: what cannot be sent is refused
     * here (FB_E_TOO_LARGE, FB_E_BAD_REQUEST) and the sandbox stays as it was. */
    json_t *h = code == FB_OK ? fb_msg_encode_exec(id, &m, &code, err) : NULL;
    if (code != FB_OK)
        return code;
    fb_exec *x = calloc(1, sizeof *x);
    if (!x) {
        json_decref(h);
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    x->sb = sb;
    x->id = id;
    x->stdin_fd = req->stdin_fd >= 0 ? fcntl(req->stdin_fd, F_DUPFD_CLOEXEC, 3) : -1;
    uint64_t cap = req->max_output ? req->max_output : sb->cfg.max_output;
    x->out_cap = cap + FB_OUTPUT_MARKER_SLACK;
    x->max_ev = 1024 + x->out_cap / 64;
    x->deadline_ns = fb_now_ns() + (req->timeout_ms + EXEC_SLACK_MS) * 1000000ull;
    x->oom_before = sb->ops == &fb_backend_jail ? fb_cgroup_oom_kills(&sb->cg) : 0;
    if (req->stdin_fd >= 0 && x->stdin_fd < 0) {
        json_decref(h);
        free(x);
        fb_fail_errno(err, "cannot take the command's stdin");
        return FB_E_RESOURCE;
    }
    pthread_mutex_lock(&sb->mu);
    if (sb->nexecs >= FB_MAX_EXECS) {
        json_decref(h);
        code = FB_E_BUSY;
        fb_fail(err, "%d commands are running in sandbox %s already", FB_MAX_EXECS, sb->id);
    } else {
        code = x->stdin_fd >= 0 ? fb_sup_send_locked(sb, h, NULL, 0, err)
                                : fb_sup_send_by_locked(sb, h, x->deadline_ns, err);
    }
    if (code != FB_OK) {
        pthread_mutex_unlock(&sb->mu);
        free_exec_locked(x);
        return code;
    }
    x->refs = 2; /* the caller's and the sandbox's (until the exec ends) */
    x->running = true;
    x->next = sb->execs;
    sb->execs = x;
    sb->nexecs++;
    sb->refs++;
    pthread_mutex_unlock(&sb->mu);
    *out = x;
    return FB_OK;
}

/* ---- consumers ------------------------------------------------------------------- */

static uint64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : fb_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* The descriptor holding position pos (pos < end_pos). */
static const struct xev *find_event(const fb_exec *x, uint64_t pos)
{
    size_t lo = 0, hi = x->nev;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->ev[mid].pos <= pos)
            lo = mid;
        else
            hi = mid;
    }
    return &x->ev[lo];
}

/* Fills ev from the log at pos; 1, or -1 when out of memory. */
static int take_event_locked(const fb_exec *x, uint64_t pos, fb_exec_event *ev)
{
    if (pos == x->end_pos) {
        ev->kind = x->code == FB_OK ? FB_EXEC_EV_EXIT : FB_EXEC_EV_ERROR;
        ev->result = x->res;
        ev->dropped = x->dropped;
        ev->code = x->code;
        snprintf(ev->message, sizeof ev->message, "%s", x->msg);
        ev->next = pos + 1;
        return 1;
    }
    const struct xev *e = find_event(x, pos);
    ev->kind = (fb_exec_event_kind)e->kind;
    if (e->kind == EV_DROPPED) {
        ev->dropped = x->dropped;
        ev->next = pos + 1;
        return 1;
    }
    uint64_t skip = pos - e->pos;
    size_t len = e->len - (size_t)skip;
    if (len > MAX_READ_CHUNK)
        len = MAX_READ_CHUNK;
    ev->data = malloc(len);
    if (!ev->data)
        return -1;
    memcpy(ev->data, x->data + e->off + skip, len);
    ev->len = len;
    ev->next = pos + len;
    return 1;
}

int fb_exec_next(fb_exec *x, uint64_t pos, fb_exec_event *ev, int timeout_ms)
{
    memset(ev, 0, sizeof *ev);
    ev->pos = pos;
    uint64_t deadline = deadline_after(timeout_ms);
    fb_sandbox *sb = x->sb;
    pthread_mutex_lock(&sb->mu);
    int rc = 0;
    for (;;) {
        if (pos < x->end_pos || (x->done && pos == x->end_pos)) {
            rc = take_event_locked(x, pos, ev);
            if (rc < 0) {
                /* Not the log's fault: tell this reader, keep the log. */
                ev->kind = FB_EXEC_EV_ERROR;
                ev->code = FB_E_NOMEM;
                snprintf(ev->message, sizeof ev->message, "out of memory reading the exec's output");
                ev->next = pos;
                rc = 1;
            }
            break;
        }
        if (x->done || pos > x->end_pos) {
            rc = -1; /* past the end */
            break;
        }
        if (timeout_ms == 0 || !fb_sup_wait_locked(sb, deadline))
            break;
    }
    pthread_mutex_unlock(&sb->mu);
    return rc;
}

void fb_exec_event_clear(fb_exec_event *ev)
{
    free(ev->data);
    memset(ev, 0, sizeof *ev);
}

fb_errc fb_exec_wait(fb_exec *x, int timeout_ms, fb_exec_result *res, fb_err *err)
{
    uint64_t deadline = deadline_after(timeout_ms);
    fb_sandbox *sb = x->sb;
    pthread_mutex_lock(&sb->mu);
    while (!x->done && timeout_ms != 0 && fb_sup_wait_locked(sb, deadline))
        ;
    fb_errc code = x->done ? x->code : FB_E_TIMEOUT;
    if (x->done && res)
        *res = x->res;
    if (!x->done)
        fb_fail(err, "exec %llu is still running", (unsigned long long)x->id);
    else if (code != FB_OK)
        fb_fail(err, "%s", x->msg);
    pthread_mutex_unlock(&sb->mu);
    return code;
}

void fb_exec_cancel(fb_exec *x)
{
    pthread_mutex_lock(&x->sb->mu);
    if (x->running && !x->cancel_sent) {
        send_signal_locked(x, SIGKILL);
        x->cancel_sent = true;
    }
    pthread_mutex_unlock(&x->sb->mu);
}

fb_errc fb_exec_signal(fb_exec *x, int sig, fb_err *err)
{
    if (!fb_msg_signal_allowed(sig)) {
        fb_fail(err, "signal %d may not be sent to a command", sig);
        return FB_E_BAD_REQUEST;
    }
    fb_errc code = FB_OK;
    pthread_mutex_lock(&x->sb->mu);
    if (x->running) {
        json_t *h = fb_msg_encode_signal(x->id, &(fb_msg_signal){.signal = sig}, err);
        code = fb_sup_send_locked(x->sb, h, NULL, 0, err);
    }
    pthread_mutex_unlock(&x->sb->mu);
    return code;
}

/* ---- the blocking form ------------------------------------------------------------ */

int fb_sandbox_exec(fb_sandbox *sb, const fb_exec_req *req, fb_exec_result *res, fb_err *err)
{
    memset(res, 0, sizeof *res);
    if (req->timeout_ms == 0)
        return fb_fail(err, "a timeout is required");
    fb_exec *x;
    if (fb_exec_start(sb, req, &x, err) != FB_OK)
        return -1;
    uint64_t pos = 0;
    int rc = -1;
    bool cancelled = false;
    for (;;) {
        fb_exec_event ev;
        int got = fb_exec_next(x, pos, &ev, req->cancel ? 100 : -1);
        if (got < 0) {
            fb_fail(err, "internal: exec log ended without a terminal event");
            break;
        }
        if (got == 0) {
            if (req->cancel && *req->cancel && !cancelled) {
                fb_exec_cancel(x);
                cancelled = true;
            }
            continue;
        }
        pos = ev.next;
        if ((ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR) && req->on_output)
            req->on_output(req->ctx, (int)ev.kind, ev.data, ev.len);
        if (ev.kind == FB_EXEC_EV_DROPPED && req->on_output) {
            char note[128];
            int n = snprintf(note, sizeof note, "\n[forgebox: output dropped: too many stream switches]\n");
            req->on_output(req->ctx, FB_STREAM_STDERR, note, (size_t)n);
        }
        bool end = ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR;
        if (ev.kind == FB_EXEC_EV_EXIT) {
            *res = ev.result;
            rc = 0;
        } else if (ev.kind == FB_EXEC_EV_ERROR) {
            fb_fail(err, "%s", ev.message);
        }
        fb_exec_event_clear(&ev);
        if (end)
            break;
    }
    fb_exec_unref(x);
    return rc;
}

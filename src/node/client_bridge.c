/*
 * client_bridge.c - the translator behind a remote sandbox: it speaks the
 * agent protocol (docs/protocol.md) on one end of a socketpair and turns
 * each request into node calls (docs/node-api.md).
 *
 * Why a translator (design (a) of issue 12's plan) rather than a "remote"
 * flag dispatched inside src/sandbox: the supervisor and the exec log are
 * the parts of a sandbox that are hard to get right - one event log per
 * exec that outlives its readers, positions, output caps, stdin windows,
 * exec deadlines, kill ending every waiter with one typed reason - and
 * with a translator a remote sandbox gets all of them unchanged, because
 * it IS a supervised sandbox (fb_sandbox_attach_fd) whose agent happens to
 * be this thread.  core's execs.c, files.c and tasks see no difference.
 * The node's own failures arrive the way an agent's would: an exec whose
 * node dies ends with an `error` frame (sandbox_ended, naming the node),
 * never a hang.  Only file transfers bypass it (client.c says why).
 *
 *   hello    -> ready (nothing to ask the node: it booted the sandbox)
 *   exec     -> a thread that POSTs .../execs with "stream": true and
 *               reads the answer - the exec's NDJSON event stream, its
 *               first line naming the exec - into stdout/stderr/exit/error
 *               frames (one round trip to the node per exec); a stream
 *               cut short is resumed with GET .../events?from=POS.  A node
 *               that does not know "stream" (older) gets the two calls.
 *   stdin    -> POST .../execs/N/stdin[?close=1], then stdin_ack
 *   signal   -> POST .../execs/N/signal
 *   shutdown -> ok.  Releasing a handle is not deleting the sandbox: any
 *               gateway serves it; core deletes with fb_node_client_delete.
 *   ping, stats -> ok
 *
 * The bridge ends when its end of the socketpair reads EOF, which is
 * fb_sandbox_destroy closing the other: it stops its streams (their
 * transfers abort within about a second), joins them and frees itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "node/client_internal.h"
#include "proto/msg.h"
#include "proto/proto.h"

#define CALL_TIMEOUT_S 60L
#define MAX_EVENT_LINE (4u << 20)
#define STREAM_RETRIES 3

typedef struct nb_exec {
    struct nc_bridge *b;
    uint64_t rid;               /* the supervisor's request id */
    char node_exec[24];         /* the node's exec id ("" until known) */
    json_t *start_req;          /* the POST .../execs body (the thread's) */
    /* Set once (under b->smu) when the start is decided: node_exec known,
     * or failed (the error frame already sent). */
    bool decided;
    pthread_t th;
    bool has_thread;
    atomic_bool done;
    /* the stream's reader state */
    uint64_t pos;
    bool terminal;
    char *line;
    size_t line_len, line_cap;
    bool bad;
    struct nb_exec *next;
} nb_exec;

struct nc_bridge {
    fb_node_client *nc;
    nc_target t;
    char sandbox_id[32];
    int fd;
    pthread_mutex_t wmu;        /* one frame at a time on fd */
    atomic_bool stop;
    pthread_t th;
    nb_exec *execs;             /* the main thread's alone */
    uint64_t max_output;        /* the sandbox's default output cap (hello) */
    pthread_mutex_t smu;        /* an exec's start being decided */
    pthread_cond_t scv;
    atomic_bool no_stream;      /* the node does not know "stream": two calls */
};

/* The main thread waits for this before it reads the next request, so a
 * stdin or signal frame always finds the node's exec id. */
static void start_decided(nb_exec *x)
{
    pthread_mutex_lock(&x->b->smu);
    x->decided = true;
    pthread_cond_broadcast(&x->b->scv);
    pthread_mutex_unlock(&x->b->smu);
}

const nc_target *nc_bridge_target(const nc_bridge *b)
{
    return &b->t;
}

const char *nc_bridge_sandbox(const nc_bridge *b)
{
    return b->sandbox_id;
}

fb_node_client *nc_bridge_client(const nc_bridge *b)
{
    return b->nc;
}

/* ---- frames to the supervisor ------------------------------------------------------------- */

static void send_frame(nc_bridge *b, json_t *h, const void *payload, size_t len)
{
    if (!h)
        return;
    uint8_t *buf = NULL;
    size_t n = 0;
    fb_err err;
    int rc = fb_frame_encode(h, payload, len, &buf, &n, &err);
    json_decref(h);
    if (rc < 0)
        return;
    pthread_mutex_lock(&b->wmu);
    size_t off = 0;
    while (off < n) {
        ssize_t w = send(b->fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            atomic_store(&b->stop, true); /* the sandbox's end is gone */
            break;
        }
        off += (size_t)w;
    }
    pthread_mutex_unlock(&b->wmu);
    free(buf);
}

static void send_error(nc_bridge *b, uint64_t id, fb_errc code, const char *message)
{
    fb_err err;
    fb_msg_error m = {.code = code, .message = message};
    send_frame(b, fb_msg_encode_error(id, &m, &err), NULL, 0);
}

static void send_ok(nc_bridge *b, uint64_t id)
{
    fb_err err;
    send_frame(b, fb_msg_encode_simple(FB_MSG_OK, id, &err), NULL, 0);
}

/* ---- an exec's event stream ----------------------------------------------------------------- */

static bool valid_exec_id(const char *xid)
{
    return xid && *xid && strlen(xid) < sizeof ((nb_exec *)0)->node_exec && strspn(xid, "0123456789") == strlen(xid);
}

static void on_event(nb_exec *x, json_t *ev)
{
    nc_bridge *b = x->b;
    const char *kind = json_string_value(json_object_get(ev, "kind"));
    if (!kind || strcmp(kind, "keepalive") == 0)
        return;
    if (strcmp(kind, "started") == 0) {
        const char *xid = json_string_value(json_object_get(ev, "exec"));
        if (x->node_exec[0] || !valid_exec_id(xid)) {
            x->bad = true;
            return;
        }
        snprintf(x->node_exec, sizeof x->node_exec, "%s", xid);
        start_decided(x);
        return;
    }
    if (!x->node_exec[0]) {
        x->bad = true; /* events before the stream named its exec */
        return;
    }
    json_t *next = json_object_get(ev, "next");
    if (json_is_integer(next) && json_integer_value(next) >= 0)
        x->pos = (uint64_t)json_integer_value(next);
    fb_err err;
    if (strcmp(kind, "stdout") == 0 || strcmp(kind, "stderr") == 0) {
        const char *data = json_string_value(json_object_get(ev, "data"));
        size_t dlen = data ? strlen(data) : 0;
        uint8_t *raw = malloc(dlen / 4 * 3 + 4);
        size_t n = 0;
        if (!raw || (dlen && sodium_base642bin(raw, dlen / 4 * 3 + 4, data, dlen, NULL, &n, NULL,
                                               sodium_base64_VARIANT_ORIGINAL) != 0)) {
            free(raw);
            x->bad = true;
            return;
        }
        if (n > 0)
            send_frame(b, fb_hdr_new(kind, x->rid), raw, n);
        free(raw);
    } else if (strcmp(kind, "exit") == 0) {
        json_t *r = json_object_get(ev, "result");
        const char *e = json_string_value(json_object_get(r, "error"));
        const char *m = json_string_value(json_object_get(r, "message"));
        fb_msg_exit ex = {
            .started = json_is_true(json_object_get(r, "started")),
            .code = (int)json_integer_value(json_object_get(r, "exit_code")),
            .signal = (int)json_integer_value(json_object_get(r, "signal")),
            .timed_out = json_is_true(json_object_get(r, "timed_out")),
            .oom = json_is_true(json_object_get(r, "oom")),
            .truncated = json_is_true(json_object_get(r, "truncated")),
            .duration_ms = (uint64_t)json_integer_value(json_object_get(r, "duration_ms")),
            .error = e && *e ? fb_errc_parse(e) : FB_E_SETUP_FAILED,
            .message = m ? m : "",
        };
        send_frame(b, fb_msg_encode_exit(x->rid, &ex, &err), NULL, 0);
        x->terminal = true;
    } else if (strcmp(kind, "error") == 0) {
        const char *code = json_string_value(json_object_get(ev, "code"));
        const char *m = json_string_value(json_object_get(ev, "message"));
        char msg[600];
        snprintf(msg, sizeof msg, "node %s: %s", b->t.name, m ? m : "the exec failed");
        send_error(b, x->rid, code ? fb_errc_parse(code) : FB_E_INTERNAL, msg);
        x->terminal = true;
    }
    /* "dropped": the node's log dropped output; nothing to forward. */
}

static bool on_stream_data(void *ctx, const char *data, size_t len)
{
    nb_exec *x = ctx;
    /* After the terminal event the node ends the stream itself: read it
     * to its end so that the connection can be reused. */
    if (x->terminal)
        return true;
    for (size_t i = 0; i < len; i++) {
        if (data[i] != '\n') {
            if (x->line_len + 1 >= MAX_EVENT_LINE) {
                x->bad = true;
                return false;
            }
            if (x->line_len + 1 >= x->line_cap) {
                size_t ncap = x->line_cap ? x->line_cap * 2 : 4096;
                char *nl = realloc(x->line, ncap);
                if (!nl) {
                    x->bad = true;
                    return false;
                }
                x->line = nl;
                x->line_cap = ncap;
            }
            x->line[x->line_len++] = data[i];
            continue;
        }
        if (x->line_len == 0)
            continue;
        json_t *ev = json_loadb(x->line, x->line_len, 0, NULL);
        x->line_len = 0;
        if (!ev) {
            x->bad = true;
            return false;
        }
        on_event(x, ev);
        json_decref(ev);
        if (x->terminal)
            return true;
        if (x->bad || atomic_load(&x->b->stop))
            return false;
    }
    return true;
}

/* The start, POST .../execs: with "stream" the answer is the event stream
 * (fed to on_stream_data, whose first line names the exec); without (a
 * node that does not know "stream") the answer names the exec and the
 * events are read with GET afterwards.  x->node_exec is set when the node
 * started the command. */
static fb_errc start_call(nb_exec *x, nc_resp *r, fb_err *err)
{
    nc_bridge *b = x->b;
    bool stream = !atomic_load(&b->no_stream);
    if (stream)
        json_object_set_new(x->start_req, "stream", json_true());
    else
        json_object_del(x->start_req, "stream");
    char *body = json_dumps(x->start_req, JSON_COMPACT);
    if (!body) {
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    char path[160];
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/execs", b->sandbox_id);
    nc_call call = {.method = "POST", .path = path, .body = body, .body_len = strlen(body), .body_fd = -1,
                    .content_type = "application/json", .timeout_s = stream ? 0 : CALL_TIMEOUT_S,
                    .on_data = stream ? on_stream_data : NULL, .ctx = x, .stop = &b->stop};
    fb_errc code = nc_request(b->nc, &b->t, &call, r, err);
    free(body);
    if (!stream && code == FB_OK && r->status >= 200 && r->status < 300) {
        json_t *a = r->body ? json_loadb(r->body, r->len, 0, NULL) : NULL;
        const char *xid = json_string_value(json_object_get(a, "exec"));
        if (valid_exec_id(xid)) {
            snprintf(x->node_exec, sizeof x->node_exec, "%s", xid);
            start_decided(x);
        }
        json_decref(a);
    }
    return code;
}

static fb_errc events_call(nb_exec *x, nc_resp *r, fb_err *err)
{
    nc_bridge *b = x->b;
    char path[200];
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/execs/%s/events?from=%llu", b->sandbox_id, x->node_exec,
             (unsigned long long)x->pos);
    nc_call call = {.method = "GET", .path = path, .body_fd = -1, .on_data = on_stream_data, .ctx = x,
                    .stop = &b->stop};
    return nc_request(b->nc, &b->t, &call, r, err);
}

static void *stream_main(void *arg)
{
    nb_exec *x = arg;
    nc_bridge *b = x->b;
    fb_err err = {{0}};
    fb_errc last = FB_OK;
    long last_status = 0;
    int retries = 0;
    while (!x->terminal && !atomic_load(&b->stop)) {
        bool starting = !x->node_exec[0];
        uint64_t before = x->pos;
        x->line_len = 0;
        nc_resp r;
        nc_resp_init(&r, 1u << 20);
        last = starting ? start_call(x, &r, &err) : events_call(x, &r, &err);
        last_status = r.status;
        if (last == FB_OK && (r.status < 200 || r.status >= 300))
            last = nc_status_errc(&b->t, &r, starting ? "cannot start the command" : "cannot read the exec's events",
                                  &err);
        /* A node from before "stream" refuses it as an unknown field. */
        bool plain = starting && r.status == 400 && strstr(r.message, "\"stream\"") && !atomic_load(&b->no_stream);
        nc_resp_free(&r);
        if (plain) {
            atomic_store(&b->no_stream, true);
            continue;
        }
        if (x->bad) {
            fb_fail(&err, "node %s sent a malformed event stream", b->t.name);
            last = FB_E_PROTOCOL;
            break;
        }
        if (starting && !x->node_exec[0]) {
            /* The command did not start (or the node never said so). */
            if (last == FB_OK) {
                fb_fail(&err, "node %s answered an exec without a valid id", b->t.name);
                last = FB_E_PROTOCOL;
            } else if (last_status == 404) {
                fb_fail(&err, "sandbox %s is gone from node %s", b->sandbox_id, b->t.name);
                last = FB_E_SANDBOX_ENDED;
            }
            if (!atomic_load(&b->stop))
                send_error(b, x->rid, last, err.msg);
            x->terminal = true;
            break;
        }
        if (x->terminal || last == FB_E_KILLED || (last != FB_OK && last != FB_E_SANDBOX_ENDED))
            break; /* done, stopped, or a refusal no retry changes */
        if (starting || x->pos > before) {
            retries = 0; /* progress: a fresh budget of retries */
        } else if (++retries > STREAM_RETRIES) {
            break;
        } else {
            usleep(200000u * (unsigned)retries);
        }
    }
    if (!x->terminal && !atomic_load(&b->stop)) {
        char msg[700];
        if (last_status == 404)
            snprintf(msg, sizeof msg, "sandbox %s is gone from node %s", b->sandbox_id, b->t.name);
        else if (last == FB_OK)
            snprintf(msg, sizeof msg, "node %s ended the exec's event stream early", b->t.name);
        else
            snprintf(msg, sizeof msg, "%s", err.msg);
        send_error(b, x->rid, last == FB_E_PROTOCOL ? FB_E_PROTOCOL : FB_E_SANDBOX_ENDED, msg);
    }
    free(x->line);
    x->line = NULL;
    json_decref(x->start_req);
    x->start_req = NULL;
    start_decided(x);
    atomic_store(&x->done, true);
    return NULL;
}

/* ---- requests from the supervisor ------------------------------------------------------------ */

static fb_errc node_post(nc_bridge *b, const char *path, const char *ctype, const void *body, size_t len,
                         nc_resp *r, const char *what, fb_err *err)
{
    nc_call call = {.method = "POST", .path = path, .body = body, .body_len = len, .body_fd = -1,
                    .content_type = ctype, .timeout_s = CALL_TIMEOUT_S, .stop = &b->stop};
    nc_resp_init(r, 1u << 20);
    fb_errc code = nc_request(b->nc, &b->t, &call, r, err);
    if (code == FB_OK)
        code = nc_status_errc(&b->t, r, what, err);
    return code;
}

static void reap_execs(nc_bridge *b, bool all)
{
    for (nb_exec **p = &b->execs; *p;) {
        nb_exec *x = *p;
        if (!all && !atomic_load(&x->done)) {
            p = &x->next;
            continue;
        }
        if (x->has_thread)
            pthread_join(x->th, NULL);
        *p = x->next;
        free(x->line);
        free(x);
    }
}

static nb_exec *find_exec(nc_bridge *b, uint64_t rid)
{
    for (nb_exec *x = b->execs; x; x = x->next)
        if (x->rid == rid)
            return x;
    return NULL;
}

static void do_exec(nc_bridge *b, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_exec m;
    if (fb_msg_decode_exec(f, &m, &err) < 0) {
        send_error(b, f->id, FB_E_BAD_REQUEST, err.msg);
        return;
    }
    json_t *argv = json_array(), *env = json_array();
    for (size_t i = 0; i < m.argc; i++)
        json_array_append_new(argv, json_string(m.argv[i]));
    for (size_t i = 0; i < m.nenv; i++)
        json_array_append_new(env, json_pack("[s,s]", m.env[i].key, m.env[i].value));
    json_t *j = json_pack("{s:o, s:o, s:s, s:I, s:I, s:b}", "argv", argv, "env", env, "cwd",
                          m.cwd ? m.cwd : "/workspace", "timeout_ms", (json_int_t)m.timeout_ms, "max_output",
                          (json_int_t)(m.max_output ? m.max_output : b->max_output), "stdin", m.stdin_pipe);
    fb_msg_exec_free(&m);
    nb_exec *x = j ? calloc(1, sizeof *x) : NULL;
    if (!x) {
        json_decref(j);
        send_error(b, f->id, FB_E_NOMEM, "out of memory");
        return;
    }
    reap_execs(b, false);
    x->b = b;
    x->rid = f->id;
    x->start_req = j;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&x->th, NULL, stream_main, x);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        json_decref(j);
        free(x);
        send_error(b, f->id, FB_E_RESOURCE, "cannot start a thread for the exec");
        return;
    }
    x->has_thread = true;
    x->next = b->execs;
    b->execs = x;
    /* Until the node has named the exec (or refused it) no stdin or
     * signal frame could be forwarded: wait, as for any start call. */
    pthread_mutex_lock(&b->smu);
    while (!x->decided)
        pthread_cond_wait(&b->scv, &b->smu);
    pthread_mutex_unlock(&b->smu);
}

static void do_stdin(nc_bridge *b, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_stdin m;
    nb_exec *x = find_exec(b, f->id);
    if (!x || !x->node_exec[0] || fb_msg_decode_stdin(f, &m, &err) < 0)
        return; /* an exec that failed to start, or is over */
    char path[200];
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/execs/%s/stdin%s", b->sandbox_id, x->node_exec,
             m.eof ? "?close=1" : "");
    nc_resp r;
    fb_errc code = node_post(b, path, "application/octet-stream", f->payload_len ? f->payload : (const void *)"",
                             f->payload_len, &r, "cannot write to the command's stdin", &err);
    nc_resp_free(&r);
    if (code == FB_OK) {
        if (f->payload_len) {
            fb_msg_stdin_ack ack = {.bytes = f->payload_len};
            send_frame(b, fb_msg_encode_stdin_ack(f->id, &ack, &err), NULL, 0);
        }
        return;
    }
    /* The command may have ended already (its exit is on its way). */
    if (code == FB_E_STATE)
        return;
    send_error(b, f->id, code == FB_E_SANDBOX_ENDED ? code : code, err.msg);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGHUP: return "HUP";
    case SIGINT: return "INT";
    case SIGQUIT: return "QUIT";
    case SIGKILL: return "KILL";
    case SIGUSR1: return "USR1";
    case SIGUSR2: return "USR2";
    case SIGTERM: return "TERM";
    case SIGCONT: return "CONT";
    case SIGSTOP: return "STOP";
    case SIGTSTP: return "TSTP";
    default: return NULL;
    }
}

static void do_signal(nc_bridge *b, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_signal m;
    nb_exec *x = find_exec(b, f->id);
    if (!x || !x->node_exec[0] || fb_msg_decode_signal(f, &m, &err) < 0 || !signal_name(m.signal))
        return;
    char path[200], body[64];
    snprintf(path, sizeof path, "/node/v1/sandboxes/%s/execs/%s/signal", b->sandbox_id, x->node_exec);
    snprintf(body, sizeof body, "{\"signal\":\"%s\"}", signal_name(m.signal));
    nc_resp r;
    (void)node_post(b, path, "application/json", body, strlen(body), &r, "cannot signal the command", &err);
    nc_resp_free(&r);
}

static void dispatch(nc_bridge *b, const fb_frame *f)
{
    fb_err err;
    switch (fb_msg_type_of(f)) {
    case FB_MSG_HELLO: {
        /* The supervisor caps an exec's output at this default when the
         * exec names none: the node must use the same cap, not its own. */
        fb_msg_hello h;
        if (fb_msg_decode_hello(f, &h, &err) == 0)
            b->max_output = h.max_output;
        fb_msg_ready rd = {.version = FB_PROTO_VERSION, .agent = "forgebox-node-client",
                           .kernel = b->t.name, .mode = "remote"};
        send_frame(b, fb_msg_encode_ready(f->id, &rd, &err), NULL, 0);
        return;
    }
    case FB_MSG_EXEC:
        do_exec(b, f);
        return;
    case FB_MSG_STDIN:
        do_stdin(b, f);
        return;
    case FB_MSG_SIGNAL:
        do_signal(b, f);
        return;
    case FB_MSG_SHUTDOWN:
    case FB_MSG_PING:
    case FB_MSG_STATS:
        send_ok(b, f->id);
        return;
    default:
        send_error(b, f->id, FB_E_UNKNOWN_TYPE, "a remote sandbox does not take this request");
        return;
    }
}

static void *bridge_main(void *arg)
{
    nc_bridge *b = arg;
    fb_decoder dec;
    fb_decoder_init(&dec);
    uint8_t *buf = malloc(65536);
    while (buf && !atomic_load(&b->stop)) {
        size_t room = fb_decoder_room(&dec);
        if (room > 65536)
            room = 65536;
        if (room == 0)
            break;
        ssize_t n = read(b->fd, buf, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        fb_err err;
        if (fb_decoder_feed(&dec, buf, (size_t)n, &err) < 0)
            break;
        for (;;) {
            fb_frame f;
            int got = fb_decoder_next(&dec, &f, &err);
            if (got <= 0) {
                if (got < 0)
                    atomic_store(&b->stop, true);
                break;
            }
            dispatch(b, &f);
            fb_frame_clear(&f);
        }
    }
    /* The sandbox was destroyed (or its channel broke): stop the streams. */
    atomic_store(&b->stop, true);
    shutdown(b->fd, SHUT_RDWR);
    reap_execs(b, true);
    free(buf);
    fb_decoder_free(&dec);
    close(b->fd);
    fb_node_client *nc = b->nc;
    pthread_mutex_destroy(&b->wmu);
    pthread_mutex_destroy(&b->smu);
    pthread_cond_destroy(&b->scv);
    free(b);
    nc_live_add(nc, -1);
    return NULL;
}

int nc_bridge_start(fb_node_client *nc, const nc_target *t, const char *sandbox_id, int fd, nc_bridge **out,
                    fb_err *err)
{
    nc_bridge *b = calloc(1, sizeof *b);
    if (!b)
        return fb_fail(err, "out of memory");
    b->nc = nc;
    b->t = *t;
    snprintf(b->sandbox_id, sizeof b->sandbox_id, "%s", sandbox_id);
    b->fd = fd;
    pthread_mutex_init(&b->wmu, NULL);
    pthread_mutex_init(&b->smu, NULL);
    pthread_cond_init(&b->scv, NULL);
    nc_live_add(nc, 1);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&b->th, &at, bridge_main, b);
    pthread_attr_destroy(&at);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        nc_live_add(nc, -1);
        pthread_mutex_destroy(&b->wmu);
        pthread_mutex_destroy(&b->smu);
        pthread_cond_destroy(&b->scv);
        free(b);
        return fb_fail(err, "cannot start a node bridge thread: %s", strerror(rc));
    }
    *out = b;
    return 0;
}

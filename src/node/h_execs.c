/*
 * h_execs.c - /node/v1/sandboxes/{id}/execs (docs/node-api.md): a command
 * started (stdin from a pipe or /dev/null), its event log as chunked
 * NDJSON read at the pace the gateway takes it (a keep-alive line every
 * NODE_KEEPALIVE_S of quiet), stdin bytes and signals.
 *
 * A start with "stream": true answers with the event stream itself (its
 * first line names the exec), so the common exec is one round trip to the
 * node instead of two; GET .../events stays for reconnects and other
 * readers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "node/http.h"

/* ---- execs ------------------------------------------------------------------------------ */

static enum MHD_Result stream_answer(nreq *r, fb_exec *x, uint64_t from, int status, const char *started_id);

enum MHD_Result nh_exec(nreq *r)
{
    static const char *const keys[] = {"argv", "env", "cwd", "timeout_ms", "max_output", "stdin", "stream", NULL};
    enum MHD_Result rc;
    json_t *o = nh_body_json(r, keys, &rc);
    if (!o)
        return rc;
    json_t *jargv = json_object_get(o, "argv"), *jenv = json_object_get(o, "env");
    json_t *jstdin = json_object_get(o, "stdin"), *jstream = json_object_get(o, "stream");
    const char *cwd = nh_get_str(o, "cwd");
    size_t argc = json_is_array(jargv) ? json_array_size(jargv) : 0;
    size_t nenv = json_is_array(jenv) ? json_array_size(jenv) : 0;
    fb_exec_req req;
    memset(&req, 0, sizeof req);
    const char *bad = NULL;
    if (argc == 0 || argc > 4096)
        bad = "\"argv\" must be an array of 1 to 4096 strings";
    else if (jenv && !json_is_null(jenv) && (!json_is_array(jenv) || nenv > 1024))
        bad = "\"env\" must be an array of at most 1024 [name, value] pairs";
    else if (json_object_get(o, "cwd") && !json_is_null(json_object_get(o, "cwd")) && (!cwd || strlen(cwd) > 4096))
        bad = "\"cwd\" must be a path";
    else if (jstdin && !json_is_boolean(jstdin))
        bad = "\"stdin\" must be a boolean";
    else if (jstream && !json_is_boolean(jstream))
        bad = "\"stream\" must be a boolean";
    else if (!nh_get_u64(o, "timeout_ms", 60000, 1, FB_MAX_TIMEOUT_MS, &req.timeout_ms))
        bad = "\"timeout_ms\" is out of range";
    else if (!nh_get_u64(o, "max_output", 0, 0, r->n->cfg->limits.max_output_bytes, &req.max_output))
        bad = "\"max_output\" is outside this node's limits";
    const char **argv = bad ? NULL : calloc(argc + 1, sizeof *argv);
    fb_env_var *env = bad || !nenv ? NULL : calloc(nenv, sizeof *env);
    if (!bad && (!argv || (nenv && !env)))
        bad = "out of memory";
    for (size_t i = 0; !bad && i < argc; i++)
        if (!(argv[i] = json_string_value(json_array_get(jargv, i))))
            bad = "\"argv\" must be an array of strings";
    for (size_t i = 0; !bad && i < nenv; i++) {
        json_t *p = json_array_get(jenv, i);
        env[i].key = json_string_value(json_array_get(p, 0));
        env[i].value = json_string_value(json_array_get(p, 1));
        if (!json_is_array(p) || json_array_size(p) != 2 || !env[i].key || !env[i].value)
            bad = "\"env\" must be an array of [name, value] string pairs";
    }
    if (bad) {
        free(argv);
        free(env);
        json_decref(o);
        return nh_error(r, 400, "bad_request", "%s", bad);
    }
    if (!nh_open_sandbox(r, &rc)) {
        free(argv);
        free(env);
        json_decref(o);
        return rc;
    }
    int p[2] = {-1, -1};
    bool want_stdin = json_is_true(jstdin), want_stream = json_is_true(jstream);
    if (want_stdin && pipe2(p, O_CLOEXEC) < 0) {
        free(argv);
        free(env);
        json_decref(o);
        return nh_error(r, 503, "unavailable", "cannot make the stdin pipe");
    }
    req.argv = argv;
    req.envv = env;
    req.nenv = nenv;
    req.cwd = cwd;
    req.stdin_fd = p[0];
    fb_exec *x = NULL;
    fb_err err = {{0}};
    fb_errc c = fb_exec_start(r->s->sb, &req, &x, &err);
    if (p[0] >= 0)
        close(p[0]); /* fb_exec_start took its own copy */
    free(argv);
    free(env);
    json_decref(o);
    if (c != FB_OK) {
        if (p[1] >= 0)
            close(p[1]);
        return nh_errc(r, c, err.msg);
    }
    if (p[1] >= 0)
        fb_set_nonblock(p[1], true);
    node_exec *e = NULL;
    c = node_exec_add(r->n, r->s, x, p[1], &e);
    if (c != FB_OK) {
        fb_exec_cancel(x);
        fb_exec_unref(x);
        if (p[1] >= 0)
            close(p[1]);
        return nh_errc(r, c, "this sandbox keeps too many execs that have not ended");
    }
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)e->id);
    if (want_stream) {
        enum MHD_Result sr = stream_answer(r, e->x, 0, 201, id);
        node_exec_put(r->n, e);
        return sr;
    }
    node_exec_put(r->n, e);
    return nh_json(r, 201, json_pack("{s:s}", "exec", id));
}

/* The exec of the path, held in r->e (and its sandbox in r->s). */
bool nh_open_exec(nreq *r, enum MHD_Result *rc)
{
    if (!nh_open_sandbox(r, rc))
        return false;
    r->e = node_exec_get(r->n, r->s, r->exec);
    if (!r->e) {
        *rc = nh_error(r, 404, "not_found", "no exec %llu in %s", (unsigned long long)r->exec, r->sid);
        return false;
    }
    return true;
}

typedef struct ev_stream {
    fb_exec *x;
    uint64_t pos;
    unsigned quiet_s;
    bool ended;
    char *buf;
    size_t blen, boff;
} ev_stream;

static json_t *result_json(const fb_exec_result *res)
{
    json_t *m = json_string(res->message);
    return json_pack("{s:i, s:i, s:b, s:b, s:b, s:I, s:b, s:s, s:o}", "exit_code", res->exit_code, "signal",
                     res->signal, "timed_out", res->timed_out, "oom", res->oom, "truncated", res->truncated,
                     "duration_ms", (json_int_t)res->duration_ms, "started", res->started, "error", res->error,
                     "message", m ? m : json_string(""));
}

/* One event as a line of NDJSON (malloc'd), or NULL. */
static char *event_line(const fb_exec_event *ev, size_t *len)
{
    json_t *o = NULL;
    switch (ev->kind) {
    case FB_EXEC_EV_STDOUT:
    case FB_EXEC_EV_STDERR: {
        size_t cap = sodium_base64_encoded_len(ev->len, sodium_base64_VARIANT_ORIGINAL);
        char *b64 = malloc(cap);
        if (!b64)
            return NULL;
        sodium_bin2base64(b64, cap, ev->data, ev->len, sodium_base64_VARIANT_ORIGINAL);
        o = json_pack("{s:s, s:I, s:I, s:s}", "kind", ev->kind == FB_EXEC_EV_STDOUT ? "stdout" : "stderr", "pos",
                      (json_int_t)ev->pos, "next", (json_int_t)ev->next, "data", b64);
        free(b64);
        break;
    }
    case FB_EXEC_EV_DROPPED:
        o = json_pack("{s:s, s:I, s:I, s:I}", "kind", "dropped", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "dropped", (json_int_t)ev->dropped);
        break;
    case FB_EXEC_EV_EXIT:
        o = json_pack("{s:s, s:I, s:I, s:I, s:o}", "kind", "exit", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "dropped", (json_int_t)ev->dropped, "result", result_json(&ev->result));
        break;
    case FB_EXEC_EV_ERROR: {
        json_t *m = json_string(ev->message);
        o = json_pack("{s:s, s:I, s:I, s:s, s:o}", "kind", "error", "pos", (json_int_t)ev->pos, "next",
                      (json_int_t)ev->next, "code", fb_errc_name(ev->code), "message", m ? m : json_string(""));
        break;
    }
    }
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

static ssize_t ev_read(void *cls, uint64_t off, char *out, size_t max)
{
    (void)off;
    ev_stream *st = cls;
    while (st->boff == st->blen) {
        free(st->buf);
        st->buf = NULL;
        st->blen = st->boff = 0;
        if (st->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        fb_exec_event ev;
        int got = fb_exec_next(st->x, st->pos, &ev, 1000);
        if (got < 0) {
            st->ended = true;
            continue;
        }
        if (got == 0) {
            if (++st->quiet_s >= NODE_KEEPALIVE_S) {
                st->quiet_s = 0;
                static const char ka[] = "{\"kind\":\"keepalive\"}\n";
                st->buf = strdup(ka);
                if (!st->buf)
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                st->blen = sizeof ka - 1;
            }
            continue;
        }
        st->quiet_s = 0;
        st->buf = event_line(&ev, &st->blen);
        st->pos = ev.next;
        if (ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR)
            st->ended = true;
        fb_exec_event_clear(&ev);
        if (!st->buf)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t k = st->blen - st->boff < max ? st->blen - st->boff : max;
    memcpy(out, st->buf + st->boff, k);
    st->boff += k;
    return (ssize_t)k;
}

static void ev_free(void *cls)
{
    ev_stream *st = cls;
    fb_exec_unref(st->x);
    free(st->buf);
    free(st);
}

enum MHD_Result nh_events(nreq *r)
{
    uint64_t from = 0;
    const char *f = nh_query(r, "from");
    if (f && fb_parse_u64(f, 0, UINT64_MAX >> 1, &from) < 0)
        return nh_error(r, 400, "bad_request", "\"from\" must be a position");
    enum MHD_Result rc;
    if (!nh_open_exec(r, &rc))
        return rc;
    fb_exec_event ev;
    int got = fb_exec_next(r->e->x, from, &ev, 0);
    if (got == 1)
        fb_exec_event_clear(&ev);
    if (got < 0)
        return nh_error(r, 404, "not_found", "position %llu is past the exec's events", (unsigned long long)from);
    return stream_answer(r, r->e->x, from, 200, NULL);
}

/* x's events from `from` as the chunked NDJSON answer; with started_id,
 * a first line {"kind":"started","exec":ID} (POST .../execs "stream"). */
static enum MHD_Result stream_answer(nreq *r, fb_exec *x, uint64_t from, int status, const char *started_id)
{
    ev_stream *st = calloc(1, sizeof *st);
    if (!st)
        return nh_error(r, 503, "unavailable", "out of memory");
    st->x = fb_exec_ref(x);
    st->pos = from;
    if (started_id) {
        char *line = NULL;
        int n = asprintf(&line, "{\"kind\":\"started\",\"exec\":\"%s\"}\n", started_id);
        if (n < 0) {
            ev_free(st);
            return nh_error(r, 503, "unavailable", "out of memory");
        }
        st->buf = line;
        st->blen = (size_t)n;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, ev_read, st, ev_free);
    if (!resp) {
        ev_free(st);
        return MHD_NO;
    }
    return nh_queue(r, status, resp, "application/x-ndjson");
}

static const struct {
    const char *name;
    int sig;
} signals[] = {{"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
               {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"TSTP", SIGTSTP}};

enum MHD_Result nh_signal(nreq *r)
{
    static const char *const keys[] = {"signal", NULL};
    enum MHD_Result rc;
    json_t *o = nh_body_json(r, keys, &rc);
    if (!o)
        return rc;
    const char *name = nh_get_str(o, "signal");
    int sig = 0;
    for (size_t i = 0; name && i < sizeof signals / sizeof signals[0]; i++)
        if (strcmp(signals[i].name, name) == 0)
            sig = signals[i].sig;
    json_decref(o);
    if (!sig)
        return nh_error(r, 400, "bad_request", "\"signal\" must be one of HUP INT QUIT KILL USR1 USR2 TERM CONT STOP TSTP");
    if (!nh_open_exec(r, &rc))
        return rc;
    fb_err err = {{0}};
    fb_errc c = fb_exec_signal(r->e->x, sig, &err);
    if (c != FB_OK)
        return nh_errc(r, c, err.msg);
    return nh_empty(r, 204);
}

/* stdin: decided from the headers, then written as the body arrives. */
enum MHD_Result nh_stdin_begin(nreq *r)
{
    enum MHD_Result rc;
    if (!nh_open_exec(r, &rc))
        return rc;
    pthread_mutex_lock(&r->e->in_lock);
    bool open = r->e->in_fd >= 0;
    pthread_mutex_unlock(&r->e->in_lock);
    if (!open)
        return nh_error(r, 409, "bad_state",
                          r->e->had_stdin ? "the exec's stdin is closed" : "the exec has no stdin pipe");
    return MHD_YES;
}

/* Writes all of data to the pipe, waiting at most the request timeout for
 * a command that does not read.  false: closed, or never read. */
bool nh_stdin_write(nreq *r, const char *data, size_t n)
{
    node_exec *e = r->e;
    int timeout_ms = (int)(r->n->cfg->limits.request_timeout_s * 1000);
    pthread_mutex_lock(&e->in_lock);
    bool ok = e->in_fd >= 0;
    while (ok && n) {
        ssize_t w = write(e->in_fd, data, n);
        if (w > 0) {
            data += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {e->in_fd, POLLOUT, 0};
            int p = poll(&pfd, 1, timeout_ms);
            if (p > 0 && !(pfd.revents & (POLLERR | POLLHUP)))
                continue;
            if (p == 0)
                r->stdin_code = FB_E_BUSY;
        }
        ok = false;
    }
    pthread_mutex_unlock(&e->in_lock);
    return ok;
}

enum MHD_Result nh_stdin_end(nreq *r)
{
    if (r->stdin_failed)
        return nh_error(r, 409, r->stdin_code == FB_E_BUSY ? "busy" : "bad_state",
                          r->stdin_code == FB_E_BUSY ? "the command does not read its stdin"
                                                     : "the exec's stdin is closed (the command ended?)");
    const char *close_q = nh_query(r, "close");
    if (close_q && strcmp(close_q, "0") != 0) {
        pthread_mutex_lock(&r->e->in_lock);
        if (r->e->in_fd >= 0)
            close(r->e->in_fd);
        r->e->in_fd = -1;
        pthread_mutex_unlock(&r->e->in_lock);
    }
    return nh_empty(r, 204);
}


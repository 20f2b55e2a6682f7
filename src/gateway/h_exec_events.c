/*
 * h_exec_events.c - an exec's events as server-sent events (gw.h): the
 * answer to POST /v1/sandboxes/{id}/exec with Accept: text/event-stream,
 * and GET /v1/sandboxes/{id}/execs/{exec_id}/events, which resumes one.
 *
 * The stream is a reader of the exec's event log in the sandbox (through
 * src/core): it reads at the pace the client takes it, so a slow or
 * stalled client holds back nothing but itself (finding 9 of issue 6).
 * When the client goes away the exec runs on for limits.exec_reattach_s
 * (core's rule), and a client may come back with the id of the last event
 * it saw (Last-Event-ID, or ?after=) and continue exactly there.
 *
 *   id: 0                      the first event names the exec
 *   event: exec
 *   data: {"exec_id":"x_...","sandbox_id":"..."}
 *
 *   id: 6                      output, as UTF-8 text
 *   event: stdout
 *   data: {"data":"hello\n"}
 *
 *   id: 8                      exactly one at the end
 *   event: exit
 *   data: {"exit_code":0,...}  (or {"error":..., "code":...} if the exec failed)
 *
 * Output is cleaned with one fb_utf8_cleaner per stream for the whole
 * response, so a character split across log chunks arrives whole.  An id
 * is a resume token: the log position to read from next, which is placed
 * before a character the cleaner still holds back, so that resuming
 * re-reads its first bytes.  When the *other* stream holds back part of a
 * character too, the token also names where that part starts ("P:M"); a
 * resumed stream reads it first to prime that stream's cleaner.  Clients
 * send the token back as they got it.  (A character whose parts are
 * interleaved with the other stream's output more than once is the one
 * case a resume there turns into U+FFFD.)
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "gateway/gw.h"

#define TOKEN_MAX 64

typedef struct sse_state {
    fb_core_exec *x;
    uint64_t pos;             /* the next log position to read */
    fb_utf8_cleaner cl[2];    /* stdout, stderr */
    uint64_t pend_at[2];      /* where the bytes a cleaner holds back start */
    bool pend_ok[2];          /* ... and they are one run of that stream's output */
    uint64_t run_start[2];    /* where that stream's latest run of output began */
    int last;                 /* the stream of the last event read, or -1 */
    char *buf;                /* formatted text not yet handed to MHD */
    size_t blen, boff, bcap;
    bool ended;
} sse_state;

/* ---- resume tokens ----------------------------------------------------------------- */

static bool parse_u64(const char **p, uint64_t *v)
{
    const char *s = *p;
    size_t n = 0;
    *v = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 20) {
        if (*v > (UINT64_MAX - (uint64_t)(s[n] - '0')) / 10)
            return false;
        *v = *v * 10 + (uint64_t)(s[n] - '0');
        n++;
    }
    *p = s + n;
    return n > 0;
}

/* "P" or "P:M" or "P:M:M", every M below P.  false: malformed. */
static bool parse_token(const char *s, uint64_t *p, uint64_t m[2], size_t *nm)
{
    *nm = 0;
    if (!parse_u64(&s, p))
        return false;
    while (*s == ':' && *nm < 2) {
        s++;
        if (!parse_u64(&s, &m[*nm]) || m[*nm] >= *p)
            return false;
        (*nm)++;
    }
    return *s == '\0';
}

/* The token to resume after what has been sent, the last event read
 * being of stream cur (-1: not output) and ending at next. */
static void make_token(const sse_state *st, int cur, uint64_t next, char out[TOKEN_MAX])
{
    uint64_t p = cur >= 0 && st->cl[cur].npend && st->pend_ok[cur] ? st->pend_at[cur] : next;
    int n = snprintf(out, TOKEN_MAX, "%llu", (unsigned long long)p);
    for (int i = 0; i < 2; i++)
        if (i != cur && st->cl[i].npend && st->pend_ok[i] && st->pend_at[i] < p)
            n += snprintf(out + n, TOKEN_MAX - (size_t)n, ":%llu", (unsigned long long)st->pend_at[i]);
}

/* ---- formatting -------------------------------------------------------------------- */

static bool append(sse_state *st, const char *s, size_t n)
{
    if (st->blen + n > st->bcap) {
        size_t ncap = st->bcap ? st->bcap : 4096;
        while (ncap < st->blen + n)
            ncap *= 2;
        char *nb = realloc(st->buf, ncap);
        if (!nb)
            return false;
        st->buf = nb;
        st->bcap = ncap;
    }
    memcpy(st->buf + st->blen, s, n);
    st->blen += n;
    return true;
}

static bool emit(sse_state *st, const char *id, const char *name, json_t *data /* stolen */)
{
    char *text = data ? json_dumps(data, JSON_COMPACT) : NULL;
    json_decref(data);
    char head[TOKEN_MAX + 48];
    int hn = snprintf(head, sizeof head, "id: %s\nevent: %s\ndata: ", id, name);
    bool ok = text && append(st, head, (size_t)hn) && append(st, text, strlen(text)) && append(st, "\n\n", 2);
    free(text);
    return ok;
}

static bool emit_text(sse_state *st, const char *id, int stream, const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    return j && emit(st, id, stream == 0 ? "stdout" : "stderr", json_pack("{s:o}", "data", j));
}

/* ---- reading the log ----------------------------------------------------------------- */

/* Cleans one chunk of stream i read at [pos, next) into out. */
static size_t clean(sse_state *st, int i, const fb_exec_event *ev, char *out)
{
    if (st->last != i)
        st->run_start[i] = ev->pos;
    st->last = i;
    size_t n = fb_utf8_clean_chunk(&st->cl[i], ev->data, ev->len, out);
    if (st->cl[i].npend) {
        st->pend_at[i] = ev->next - st->cl[i].npend;
        st->pend_ok[i] = st->pend_at[i] >= st->run_start[i];
    }
    return n;
}

static bool on_output(sse_state *st, const fb_exec_event *ev)
{
    int i = ev->kind == FB_EXEC_EV_STDOUT ? 0 : 1;
    char *out = malloc(fb_utf8_clean_bound(ev->len));
    if (!out)
        return false;
    size_t n = clean(st, i, ev, out);
    char id[TOKEN_MAX];
    make_token(st, i, ev->next, id);
    bool ok = n == 0 || emit_text(st, id, i, out, n); /* all held back: nothing to send yet */
    free(out);
    return ok;
}

static bool on_end(sse_state *st, const fb_exec_event *ev)
{
    char id[TOKEN_MAX];
    for (int i = 0; i < 2; i++) {
        char tail[3];
        size_t n = fb_utf8_clean_finish(&st->cl[i], tail); /* a character cut short: U+FFFD */
        make_token(st, -1, ev->pos, id);
        if (n && !emit_text(st, id, i, tail, n))
            return false;
    }
    snprintf(id, sizeof id, "%llu", (unsigned long long)ev->next);
    json_t *data;
    if (ev->kind == FB_EXEC_EV_EXIT) {
        data = gw_exec_result_json(&ev->result, ev->dropped);
    } else {
        json_t *m = json_string(ev->message);
        data = json_pack("{s:o, s:s}", "error", m ? m : json_string(""), "code", fb_errc_name(ev->code));
    }
    st->ended = true;
    return emit(st, id, "exit", data);
}

/* Reads the next event into st->buf (or a keep-alive).  false: out of memory. */
static bool step(sse_state *st)
{
    fb_exec_event ev;
    int got = fb_core_exec_next(st->x, st->pos, &ev, 1000);
    if (got == 0) {
        /* A quiet command still gets a comment line every second: writing
         * it is how a client that went away is noticed. */
        static const char keepalive[] = ": keepalive\n\n";
        return append(st, keepalive, sizeof keepalive - 1);
    }
    if (got < 0) {
        st->ended = true; /* past the end: cannot happen after the first read */
        return true;
    }
    bool ok = true;
    char id[TOKEN_MAX];
    switch (ev.kind) {
    case FB_EXEC_EV_STDOUT:
    case FB_EXEC_EV_STDERR:
        ok = on_output(st, &ev);
        break;
    case FB_EXEC_EV_DROPPED: {
        static const char note[] = "\n[forgebox: output dropped: too many stream switches]\n";
        st->last = -1;
        make_token(st, -1, ev.next, id);
        ok = emit_text(st, id, 1, note, sizeof note - 1);
        break;
    }
    case FB_EXEC_EV_EXIT:
    case FB_EXEC_EV_ERROR:
        ok = on_end(st, &ev);
        break;
    }
    st->pos = ev.next;
    fb_exec_event_clear(&ev);
    return ok;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    sse_state *st = cls;
    while (st->boff == st->blen) {
        st->blen = st->boff = 0;
        if (st->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (!step(st))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t k = st->blen - st->boff < max ? st->blen - st->boff : max;
    memcpy(buf, st->buf + st->boff, k);
    st->boff += k;
    return (ssize_t)k;
}

static void sse_free(void *cls)
{
    sse_state *st = cls;
    fb_core_exec_release(st->x); /* the exec runs on for the reattach grace period */
    free(st->buf);
    free(st);
}

/* Feeds the held-back bytes a token names at m to their stream's cleaner.
 * false: the token does not name such bytes. */
static bool prime(sse_state *st, uint64_t m)
{
    fb_exec_event ev;
    if (fb_core_exec_next(st->x, m, &ev, 0) != 1)
        return false;
    bool ok = (ev.kind == FB_EXEC_EV_STDOUT || ev.kind == FB_EXEC_EV_STDERR) && ev.len >= 1 && ev.len <= 3;
    if (ok) {
        char scratch[16];
        int i = ev.kind == FB_EXEC_EV_STDOUT ? 0 : 1;
        ok = clean(st, i, &ev, scratch) == 0 && st->cl[i].npend == ev.len;
    }
    fb_exec_event_clear(&ev);
    return ok;
}

/* Whether pos is where reading may start: 1 yes, 0 just past the end
 * (everything was sent), -1 no. */
static int check_start(fb_core_exec *x, uint64_t pos)
{
    fb_exec_event ev;
    int got = fb_core_exec_next(x, pos, &ev, 0);
    fb_exec_event_clear(&ev);
    if (got >= 0)
        return 1;
    if (pos == 0 || fb_core_exec_next(x, pos - 1, &ev, 0) != 1)
        return -1;
    bool terminal = ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR;
    fb_exec_event_clear(&ev);
    return terminal ? 0 : -1;
}

enum MHD_Result gw_exec_stream(gw_req *r, fb_core_exec *x, const char *from)
{
    uint64_t p, m[2];
    size_t nm;
    const char *bad = NULL;
    int start = 0;
    if (!parse_token(from ? from : "0", &p, m, &nm))
        bad = "the resume position (Last-Event-ID or \"after\") must be an event id this stream sent";
    else if ((start = check_start(x, p)) < 0)
        bad = "the resume position (Last-Event-ID or \"after\") is past the end of the exec's events";
    sse_state *st = bad || start == 0 ? NULL : calloc(1, sizeof *st);
    if (st) {
        st->x = x;
        st->pos = p;
        st->last = -1;
        fb_utf8_cleaner_init(&st->cl[0]);
        fb_utf8_cleaner_init(&st->cl[1]);
        for (size_t i = 0; i < nm && !bad; i++)
            if (!prime(st, m[i]))
                bad = "the resume position (Last-Event-ID or \"after\") must be an event id this stream sent";
        st->last = -1;
    }
    if (bad || start == 0 || !st) {
        fb_core_exec_release(x);
        if (st)
            free(st);
        if (bad)
            return gw_send_error(r, 400, "bad_request", bad);
        if (start == 0) /* nothing left: tells an EventSource not to reconnect */
            return gw_send_raw(r, 204, "text/event-stream", NULL, 0, MHD_RESPMEM_PERSISTENT);
        return gw_send_error(r, 503, "unavailable", "cannot start the stream");
    }
    char id[TOKEN_MAX];
    snprintf(id, sizeof id, "%s", from ? from : "0");
    if (!emit(st, id, "exec", json_pack("{s:s, s:s}", "exec_id", fb_core_exec_id(x), "sandbox_id", r->params.v[0]))) {
        sse_free(st);
        return gw_send_error(r, 503, "unavailable", "cannot start the stream");
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, st, sse_free);
    if (!resp) {
        sse_free(st);
        return MHD_NO;
    }
    return gw_queue(r, 200, resp, "text/event-stream");
}

/* GET .../events: resumes at Last-Event-ID (what a reconnecting EventSource
 * sends), else at ?after=, else at the start. */
static enum MHD_Result exec_events(gw_req *r)
{
    const char *from = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    if (!from || !from[0])
        from = gw_query(r, "after");
    enum MHD_Result rc;
    fb_core_exec *x = gw_exec_open(r, true, &rc);
    if (!x)
        return rc;
    return gw_exec_stream(r, x, from);
}

const gw_route gw_routes_exec_events[] = {
    {.def = {"GET", "/v1/sandboxes/{id}/execs/{exec_id}/events"}, .resolve = GW_RES_SANDBOX,
     .perm = FB_PERM_SANDBOXES_EXEC, .fn = exec_events},
    {.def = {NULL, NULL}},
};

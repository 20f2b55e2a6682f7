/*
 * stream.c - answers that follow an exec's event log as it grows
 * (internal.h): process.Process's Start and Connect streams and the code
 * interpreter's NDJSON.
 *
 * The response is a libmicrohttpd callback on this connection's own
 * thread: it waits (a second at a time) for the next event of the exec's
 * log and hands it to the stream's formatter, which appends bytes.  A
 * quiet command gets an idle call every idle_ms, whose bytes (a keepalive)
 * are also how a client that went away is noticed.  The stream holds only
 * its exec handle (and what its owner gives it), never the sandbox.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "common/time.h"
#include "compat/e2b/internal.h"

int e2b_stream_append(e2b_stream *st, const void *data, size_t n)
{
    if (st->len + n > st->cap) {
        size_t ncap = st->cap ? st->cap : 4096;
        while (ncap < st->len + n)
            ncap *= 2;
        char *nb = realloc(st->buf, ncap);
        if (!nb)
            return -1;
        st->buf = nb;
        st->cap = ncap;
    }
    memcpy(st->buf + st->len, data, n);
    st->len += n;
    return 0;
}

/* One more event (or an idle call) through the formatter.  false: stop. */
static bool step(e2b_stream *st)
{
    fb_exec_event ev;
    int got = fb_core_exec_next(st->x, st->pos, &ev, 1000);
    uint64_t now = fb_time_monotonic_ns();
    if (got == 0) {
        if (now - st->quiet_since < (uint64_t)st->idle_ms * 1000000ull)
            return true;
        st->quiet_since = now;
        return st->fmt(st, NULL);
    }
    st->quiet_since = now;
    if (got < 0) {
        st->ended = true;
        return true;
    }
    bool ok = st->fmt(st, &ev);
    if (ev.kind == FB_EXEC_EV_EXIT || ev.kind == FB_EXEC_EV_ERROR)
        st->ended = true;
    st->pos = ev.next;
    fb_exec_event_clear(&ev);
    return ok;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    e2b_stream *st = cls;
    while (st->off == st->len) {
        st->len = st->off = 0;
        if (st->ended) {
            if (!st->closed && st->finish) {
                st->closed = true;
                if (!st->finish(st))
                    return MHD_CONTENT_READER_END_WITH_ERROR;
                continue;
            }
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (!step(st))
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t k = st->len - st->off < max ? st->len - st->off : max;
    memcpy(buf, st->buf + st->off, k);
    st->off += k;
    return (ssize_t)k;
}

static void stream_free(void *cls)
{
    e2b_stream *st = cls;
    if (st->release)
        st->release(st);
    free(st->buf);
    free(st);
}

enum MHD_Result e2b_stream_answer(e2b_req *r, e2b_stream *st, const char *type)
{
    st->quiet_since = fb_time_monotonic_ns();
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, stream_read, st,
                                                                  stream_free);
    if (!resp) {
        stream_free(st);
        return MHD_NO;
    }
    return e2b_queue(r, 200, resp, type);
}

/*
 * sse.c - a server-sent events parser (the WHATWG "event stream" format),
 * incremental: bytes come from libcurl in whatever pieces the network
 * delivers, so a line, a CRLF or a UTF-8 sequence may be split anywhere.
 *
 * Lines end with LF, CRLF or a lone CR (a CR followed by an LF in the next
 * piece is one line end, hence after_cr).  "field: value" (one space after
 * the colon dropped), ":comment" ignored, "data" lines joined with LF, an
 * empty line dispatches the event if it has data.  "id" and "retry" mean
 * nothing to a one-shot POST and are ignored.  Both providers put one JSON
 * document per event, so a line or an event's data larger than the cap, or
 * a NUL byte, is malformed rather than something to buffer forever.
 */
#include <stdlib.h>
#include <string.h>

#include "llm/internal.h"

void llm_sse_init(struct llm_sse *s, size_t max_line)
{
    memset(s, 0, sizeof *s);
    s->max = max_line ? max_line : LLM_SSE_MAX_LINE;
}

void llm_sse_free(struct llm_sse *s)
{
    free(s->line);
    free(s->data);
    s->line = s->data = NULL;
}

static int grow(char **buf, size_t *cap, size_t need, fb_err *err)
{
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : 256;
    while (ncap < need)
        ncap *= 2;
    char *nb = realloc(*buf, ncap);
    if (!nb)
        return fb_fail_code(err, FB_LLM_EINVAL, "out of memory reading an event stream");
    *buf = nb;
    *cap = ncap;
    return 0;
}

static int dispatch(struct llm_sse *s, llm_sse_cb cb, void *user, fb_err *err)
{
    int rc = 0;
    if (s->has_data) {
        s->data[s->dlen] = '\0';
        rc = cb(user, s->event, s->data, s->dlen, err);
    }
    s->has_data = false;
    s->dlen = 0;
    s->event[0] = '\0';
    return rc;
}

static int field(struct llm_sse *s, fb_err *err)
{
    char *line = s->line;
    size_t len = s->len;
    if (len > 0 && line[0] == ':')
        return 0;
    char *colon = memchr(line, ':', len);
    size_t nlen = colon ? (size_t)(colon - line) : len;
    const char *val = colon ? colon + 1 : line + len;
    size_t vlen = colon ? len - nlen - 1 : 0;
    if (vlen > 0 && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (nlen == 4 && memcmp(line, "data", 4) == 0) {
        size_t need = s->dlen + (s->has_data ? 1 : 0) + vlen + 1;
        if (need > s->max + 1)
            return fb_fail_code(err, FB_LLM_EMALFORMED,
                                "event stream: an event's data is larger than %zu bytes", s->max);
        if (grow(&s->data, &s->dcap, need, err))
            return FB_LLM_EINVAL;
        if (s->has_data)
            s->data[s->dlen++] = '\n';
        memcpy(s->data + s->dlen, val, vlen);
        s->dlen += vlen;
        s->has_data = true;
    } else if (nlen == 5 && memcmp(line, "event", 5) == 0) {
        if (vlen > LLM_SSE_MAX_EVENT_NAME)
            return fb_fail_code(err, FB_LLM_EMALFORMED,
                                "event stream: an event name is longer than %d bytes",
                                LLM_SSE_MAX_EVENT_NAME);
        memcpy(s->event, val, vlen);
        s->event[vlen] = '\0';
    }
    return 0;
}

static int end_line(struct llm_sse *s, llm_sse_cb cb, void *user, fb_err *err)
{
    int rc = s->len == 0 ? dispatch(s, cb, user, err) : field(s, err);
    s->len = 0;
    return rc;
}

int llm_sse_feed(struct llm_sse *s, const char *buf, size_t n, llm_sse_cb cb, void *user, fb_err *err)
{
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (c == '\n' && s->after_cr) {
            s->after_cr = false;
            continue;
        }
        s->after_cr = c == '\r';
        if (c == '\r' || c == '\n') {
            int rc = end_line(s, cb, user, err);
            if (rc)
                return rc;
            continue;
        }
        if (c == '\0')
            return fb_fail_code(err, FB_LLM_EMALFORMED, "event stream: a NUL byte in a line");
        if (s->len >= s->max)
            return fb_fail_code(err, FB_LLM_EMALFORMED,
                                "event stream: a line is longer than %zu bytes", s->max);
        if (grow(&s->line, &s->cap, s->len + 1, err))
            return FB_LLM_EINVAL;
        s->line[s->len++] = c;
    }
    return 0;
}

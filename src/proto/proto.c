/*
 * proto.c - framing, the streaming decoder and the send queue (proto.h).
 *
 * The decoder keeps one contiguous buffer and parses in place: a frame is
 * taken as soon as its last byte is in, the rest is moved down.  Lengths are
 * checked the moment the 8-byte prefix is complete, before anything is
 * allocated for the body, so a hostile peer cannot make us buffer more than
 * one maximal frame.
 */
#define _GNU_SOURCE
#include "proto/proto.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void fb_frame_clear(fb_frame *f)
{
    if (f->hdr)
        json_decref(f->hdr);
    free(f->payload);
    memset(f, 0, sizeof *f);
}

void fb_json_text_free(char *text)
{
    json_free_t free_fn = NULL;
    json_get_alloc_funcs(NULL, &free_fn);
    (free_fn ? free_fn : free)(text);
}

static void json_text_freep(char **p)
{
    fb_json_text_free(*p);
}

int fb_frame_encode(const json_t *hdr, const void *payload, size_t payload_len,
                    uint8_t **out, size_t *out_len, fb_err *err)
{
    if (payload_len > FB_PROTO_MAX_PAYLOAD)
        return fb_fail(err, "payload of %zu bytes exceeds the %u-byte frame cap", payload_len,
                       FB_PROTO_MAX_PAYLOAD);
    __attribute__((cleanup(json_text_freep))) char *text = json_dumps(hdr, JSON_COMPACT);
    if (!text)
        return fb_fail(err, "cannot serialise frame header");
    size_t hlen = strlen(text);
    if (hlen == 0 || hlen > FB_PROTO_MAX_HEADER)
        return fb_fail(err, "header of %zu bytes exceeds the %u-byte cap", hlen, FB_PROTO_MAX_HEADER);
    size_t total = FB_PROTO_PREFIX + hlen + payload_len;
    uint8_t *buf = malloc(total);
    if (!buf)
        return fb_fail(err, "out of memory encoding a %zu-byte frame", total);
    put_be32(buf, (uint32_t)hlen);
    put_be32(buf + 4, (uint32_t)payload_len);
    memcpy(buf + FB_PROTO_PREFIX, text, hlen);
    if (payload_len)
        memcpy(buf + FB_PROTO_PREFIX + hlen, payload, payload_len);
    *out = buf;
    *out_len = total;
    return 0;
}

void fb_decoder_init(fb_decoder *d)
{
    memset(d, 0, sizeof *d);
}

void fb_decoder_free(fb_decoder *d)
{
    free(d->buf);
    memset(d, 0, sizeof *d);
}

/* Checks the prefix as soon as it is complete. */
static int check_prefix(fb_decoder *d, fb_err *err)
{
    if (d->len < FB_PROTO_PREFIX)
        return 0;
    uint32_t hlen = get_be32(d->buf), plen = get_be32(d->buf + 4);
    if (hlen == 0 || hlen > FB_PROTO_MAX_HEADER) {
        d->failed = true;
        return fb_fail(err, "protocol error: header length %u outside 1..%u", hlen, FB_PROTO_MAX_HEADER);
    }
    if (plen > FB_PROTO_MAX_PAYLOAD) {
        d->failed = true;
        return fb_fail(err, "protocol error: payload length %u exceeds %u", plen, FB_PROTO_MAX_PAYLOAD);
    }
    return 0;
}

size_t fb_decoder_room(const fb_decoder *d)
{
    if (d->failed)
        return 0;
    return FB_PROTO_MAX_FRAME - d->len;
}

int fb_decoder_feed(fb_decoder *d, const void *data, size_t n, fb_err *err)
{
    if (d->failed)
        return fb_fail(err, "protocol error: channel already failed");
    const uint8_t *p = data;
    while (n > 0) {
        /* Never hold more than one maximal frame: the caller must take
         * frames out (fb_decoder_next) between feeds of that size. */
        size_t room = FB_PROTO_MAX_FRAME - d->len;
        if (room == 0) {
            d->failed = true;
            return fb_fail(err, "internal: decoder full; take frames before feeding more");
        }
        size_t take = n < room ? n : room;
        if (d->len + take > d->cap) {
            size_t ncap = d->cap ? d->cap : 64 * 1024;
            while (ncap < d->len + take)
                ncap *= 2;
            if (ncap > FB_PROTO_MAX_FRAME)
                ncap = FB_PROTO_MAX_FRAME;
            uint8_t *nb = realloc(d->buf, ncap);
            if (!nb)
                return fb_fail(err, "out of memory in protocol decoder");
            d->buf = nb;
            d->cap = ncap;
        }
        memcpy(d->buf + d->len, p, take);
        d->len += take;
        p += take;
        n -= take;
        if (check_prefix(d, err) < 0)
            return -1;
        if (n > 0) {
            /* More input than one frame: the caller fed too much at once. */
            if (d->len == FB_PROTO_MAX_FRAME) {
                d->failed = true;
                return fb_fail(err, "internal: fed more than one maximal frame at once");
            }
        }
    }
    return 0;
}

static bool valid_type(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 32)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || t[i] == '_'))
            return false;
    return true;
}

int fb_decoder_next(fb_decoder *d, fb_frame *out, fb_err *err)
{
    memset(out, 0, sizeof *out);
    if (d->failed)
        return fb_fail(err, "protocol error: channel already failed");
    if (d->len < FB_PROTO_PREFIX)
        return 0;
    if (check_prefix(d, err) < 0)
        return -1;
    size_t hlen = get_be32(d->buf), plen = get_be32(d->buf + 4);
    size_t total = FB_PROTO_PREFIX + hlen + plen;
    if (d->len < total)
        return 0;

    d->failed = true; /* until the frame proves valid */
    json_error_t jerr;
    /* Reject NUL in strings (the default) and duplicate keys; jansson checks
     * UTF-8 validity itself. */
    json_t *hdr = json_loadb((const char *)d->buf + FB_PROTO_PREFIX, hlen,
                             JSON_REJECT_DUPLICATES, &jerr);
    if (!hdr)
        return fb_fail(err, "protocol error: header is not valid JSON: %s", jerr.text);
    if (!json_is_object(hdr)) {
        json_decref(hdr);
        return fb_fail(err, "protocol error: header is not a JSON object");
    }
    json_t *t = json_object_get(hdr, "t");
    if (!json_is_string(t) || !valid_type(json_string_value(t))) {
        json_decref(hdr);
        return fb_fail(err, "protocol error: header has no valid \"t\" (type)");
    }
    json_t *id = json_object_get(hdr, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 ||
        (uint64_t)json_integer_value(id) > FB_PROTO_MAX_ID) {
        json_decref(hdr);
        return fb_fail(err, "protocol error: header has no valid \"id\"");
    }
    uint8_t *payload = NULL;
    if (plen) {
        payload = malloc(plen);
        if (!payload) {
            json_decref(hdr);
            return fb_fail(err, "out of memory for a %zu-byte payload", plen);
        }
        memcpy(payload, d->buf + FB_PROTO_PREFIX + hlen, plen);
    }
    memmove(d->buf, d->buf + total, d->len - total);
    d->len -= total;
    d->failed = false;

    out->hdr = hdr;
    out->type = json_string_value(t);
    out->id = (uint64_t)json_integer_value(id);
    out->payload = payload;
    out->payload_len = plen;
    /* The next frame's prefix may already be here. */
    if (check_prefix(d, err) < 0) {
        fb_frame_clear(out);
        return -1;
    }
    return 1;
}

/* ---- channel ------------------------------------------------------------ */

void fb_chan_init(fb_chan *c, int fd)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    fb_decoder_init(&c->dec);
}

void fb_chan_free(fb_chan *c)
{
    fb_decoder_free(&c->dec);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
}

size_t fb_chan_queued(const fb_chan *c)
{
    return c->out_len - c->out_off;
}

int fb_chan_send(fb_chan *c, const json_t *hdr, const void *payload, size_t len, fb_err *err)
{
    cleanup_free uint8_t *frame = NULL;
    size_t flen;
    if (fb_frame_encode(hdr, payload, len, &frame, &flen, err) < 0)
        return -1;
    if (fb_chan_queued(c) + flen > FB_CHAN_MAX_QUEUED)
        return fb_fail(err, "send queue full (%zu bytes queued)", fb_chan_queued(c));
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_off > 0 && c->out_len + flen > c->out_cap) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    if (c->out_len + flen > c->out_cap) {
        size_t ncap = c->out_cap ? c->out_cap : 64 * 1024;
        while (ncap < c->out_len + flen)
            ncap *= 2;
        uint8_t *nb = realloc(c->out, ncap);
        if (!nb)
            return fb_fail(err, "out of memory queueing a frame");
        c->out = nb;
        c->out_cap = ncap;
    }
    memcpy(c->out + c->out_len, frame, flen);
    c->out_len += flen;
    return 0;
}

int fb_chan_flush(fb_chan *c, fb_err *err)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return fb_fail_errno(err, "write to agent channel failed");
        }
        c->out_off += (size_t)n;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

int fb_chan_flush_all(fb_chan *c, int timeout_ms, fb_err *err)
{
    uint64_t deadline = fb_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    while (fb_chan_queued(c) > 0) {
        if (fb_chan_flush(c, err) < 0)
            return -1;
        if (fb_chan_queued(c) == 0)
            break;
        int wait = -1;
        if (timeout_ms >= 0) {
            uint64_t now = fb_now_ns();
            if (now >= deadline)
                return fb_fail(err, "timed out writing to the agent channel");
            wait = (int)((deadline - now) / 1000000ull) + 1;
        }
        struct pollfd p = {.fd = c->fd, .events = POLLOUT};
        if (poll(&p, 1, wait) < 0 && errno != EINTR)
            return fb_fail_errno(err, "poll on agent channel failed");
    }
    return 0;
}

long fb_chan_read(fb_chan *c, fb_err *err)
{
    uint8_t buf[64 * 1024];
    size_t room = fb_decoder_room(&c->dec);
    if (room == 0)
        return fb_fail(err, "protocol decoder is full");
    if (room > sizeof buf)
        room = sizeof buf;
    for (;;) {
        ssize_t n = read(c->fd, buf, room);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return -2;
            return fb_fail_errno(err, "read from agent channel failed");
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (fb_decoder_feed(&c->dec, buf, (size_t)n, err) < 0)
            return -1;
        return (long)n;
    }
}

int fb_chan_recv(fb_chan *c, fb_frame *out, int timeout_ms, fb_err *err)
{
    uint64_t deadline = fb_now_ns() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000ull;
    for (;;) {
        int r = fb_decoder_next(&c->dec, out, err);
        if (r != 0)
            return r < 0 ? -1 : 0;
        if (c->eof)
            return fb_fail(err, "agent channel closed");
        int wait = -1;
        if (timeout_ms >= 0) {
            uint64_t now = fb_now_ns();
            if (now >= deadline)
                return fb_fail(err, "timed out waiting for the agent");
            wait = (int)((deadline - now) / 1000000ull) + 1;
        }
        short ev = POLLIN | (fb_chan_queued(c) ? POLLOUT : 0);
        struct pollfd p = {.fd = c->fd, .events = ev};
        int pr = poll(&p, 1, wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return fb_fail_errno(err, "poll on agent channel failed");
        }
        if (p.revents & POLLOUT && fb_chan_flush(c, err) < 0)
            return -1;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            long n = fb_chan_read(c, err);
            if (n == -1)
                return -1;
        }
    }
}

/* ---- header helpers ------------------------------------------------------ */

int fb_hdr_str(const json_t *hdr, const char *key, bool required, size_t max_len,
               const char **out, fb_err *err)
{
    json_t *v = json_object_get(hdr, key);
    if (!v) {
        if (required)
            return fb_fail(err, "missing field \"%s\"", key);
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fb_fail(err, "field \"%s\" must be a string", key);
    if (json_string_length(v) > max_len)
        return fb_fail(err, "field \"%s\" longer than %zu bytes", key, max_len);
    *out = json_string_value(v);
    return 0;
}

int fb_hdr_u64(const json_t *hdr, const char *key, bool required, uint64_t max,
               uint64_t *out, fb_err *err)
{
    json_t *v = json_object_get(hdr, key);
    if (!v) {
        if (required)
            return fb_fail(err, "missing field \"%s\"", key);
        return 0; /* caller's default stays */
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return fb_fail(err, "field \"%s\" must be a non-negative integer", key);
    if ((uint64_t)json_integer_value(v) > max)
        return fb_fail(err, "field \"%s\" exceeds %llu", key, (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

int fb_hdr_bool(const json_t *hdr, const char *key, bool *out, fb_err *err)
{
    json_t *v = json_object_get(hdr, key);
    if (!v)
        return 0;
    if (!json_is_boolean(v))
        return fb_fail(err, "field \"%s\" must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

int fb_hdr_only(const json_t *hdr, const char *const *allowed, fb_err *err)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)hdr, key, v) {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, key) == 0) {
                ok = true;
                break;
            }
        if (!ok)
            return fb_fail(err, "unknown field \"%.64s\"", key);
    }
    return 0;
}

json_t *fb_hdr_new(const char *type, uint64_t id)
{
    return json_pack("{s:s, s:I}", "t", type, "id", (json_int_t)id);
}

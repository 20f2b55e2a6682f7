/*
 * test_proto.c - unit tests for the wire protocol (src/proto/proto.h).
 *
 * The decoder is the first code to touch bytes a hostile guest controls, so
 * most of these tests feed it frames built by hand, byte for byte, and check
 * that every malformed one is refused with the exact message an operator
 * would see - and that a refused decoder stays refused.  The channel tests
 * run over a real socketpair, so partial writes, a full socket buffer, EOF
 * and timeouts are the kernel's, not a mock's.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proto/msg.h"
#include "proto/proto.h"
#include "proto/relay.h"

/* ---- helpers ------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* A frame built by hand: the prefix says hlen/plen, whatever the body is. */
static uint8_t *raw_frame(const void *hdr, size_t hlen, const void *payload, size_t plen, size_t *len)
{
    uint8_t *b = malloc(FB_PROTO_PREFIX + hlen + plen);
    assert_non_null(b);
    put_be32(b, (uint32_t)hlen);
    put_be32(b + 4, (uint32_t)plen);
    memcpy(b + FB_PROTO_PREFIX, hdr, hlen);
    if (plen)
        memcpy(b + FB_PROTO_PREFIX + hlen, payload, plen);
    *len = FB_PROTO_PREFIX + hlen + plen;
    return b;
}

static void fill_pattern(uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(i * 131u + seed * 7u + (i >> 9));
}

static bool has_pattern(const uint8_t *p, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(i * 131u + seed * 7u + (i >> 9)))
            return false;
    return true;
}

/* Asserts that the decoder is poisoned: it refuses input and frames. */
static void assert_poisoned(fb_decoder *d)
{
    fb_err err = {{0}};
    fb_frame f;
    assert_true(d->failed);
    assert_int_equal(fb_decoder_room(d), 0);
    assert_int_equal(fb_decoder_feed(d, "{", 1, &err), -1);
    assert_non_null(strstr(err.msg, "already failed"));
    memset(&err, 0, sizeof err);
    assert_int_equal(fb_decoder_next(d, &f, &err), -1);
    assert_non_null(strstr(err.msg, "already failed"));
    assert_null(f.hdr);
}

/* Feeds one hand-built frame whose header is `hdr` (hlen bytes) and expects
 * fb_decoder_next to refuse it with a message containing `needle`. */
static void expect_header_rejected_n(const char *hdr, size_t hlen, const char *needle)
{
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err = {{0}};
    size_t len;
    uint8_t *b = raw_frame(hdr, hlen, "pl", 2, &len);
    assert_int_equal(fb_decoder_feed(&d, b, len, &err), 0);
    fb_frame f;
    int r = fb_decoder_next(&d, &f, &err);
    if (r != -1 || !strstr(err.msg, needle))
        print_error("header %.*s: next=%d msg='%s' (wanted '%s')\n", (int)hlen, hdr, r, err.msg, needle);
    assert_int_equal(r, -1);
    assert_non_null(strstr(err.msg, needle));
    assert_null(f.hdr);
    assert_null(f.payload);
    assert_poisoned(&d);
    fb_decoder_free(&d);
    free(b);
}

/* For literals with embedded NULs: the length is the literal's. */
#define expect_header_rejected_lit(lit, needle) expect_header_rejected_n(lit, sizeof(lit) - 1, needle)

static void expect_header_rejected(const char *hdr, const char *needle)
{
    expect_header_rejected_n(hdr, strlen(hdr), needle);
}

/* Feeds one frame with header `hdr` and expects it to decode. */
static void expect_header_ok(const char *hdr, const char *type, uint64_t id)
{
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err = {{0}};
    size_t len;
    uint8_t *b = raw_frame(hdr, strlen(hdr), NULL, 0, &len);
    assert_int_equal(fb_decoder_feed(&d, b, len, &err), 0);
    fb_frame f;
    int r = fb_decoder_next(&d, &f, &err);
    if (r != 1)
        print_error("header %s: next=%d msg='%s'\n", hdr, r, err.msg);
    assert_int_equal(r, 1);
    assert_string_equal(f.type, type);
    assert_true(f.id == id);
    assert_int_equal(f.payload_len, 0);
    assert_null(f.payload);
    assert_false(d.failed);
    assert_int_equal(d.len, 0);
    fb_frame_clear(&f);
    fb_decoder_free(&d);
    free(b);
}

/* ---- encode / decode round trips ----------------------------------------- */

static void test_roundtrip_no_payload(void **state)
{
    (void)state;
    json_t *h = fb_hdr_new("ping", 7);
    assert_non_null(h);
    json_object_set_new(h, "note", json_string("h\xc3\xa9llo"));
    uint8_t *buf = NULL;
    size_t len = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, NULL, 0, &buf, &len, &err), 0);
    const char *want = "{\"t\":\"ping\",\"id\":7,\"note\":\"h\xc3\xa9llo\"}";
    assert_int_equal(len, FB_PROTO_PREFIX + strlen(want));
    const uint8_t prefix[8] = {0, 0, 0, (uint8_t)strlen(want), 0, 0, 0, 0};
    assert_memory_equal(buf, prefix, 8);
    assert_memory_equal(buf + 8, want, strlen(want));

    fb_decoder d;
    fb_decoder_init(&d);
    assert_int_equal(fb_decoder_feed(&d, buf, len, &err), 0);
    fb_frame f;
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "ping");
    assert_true(f.id == 7);
    assert_null(f.payload);
    assert_int_equal(f.payload_len, 0);
    assert_string_equal(json_string_value(json_object_get(f.hdr, "note")), "h\xc3\xa9llo");
    assert_true(json_equal(f.hdr, h));
    fb_frame_clear(&f);
    assert_null(f.hdr);
    /* Nothing left: the decoder asks for more, it is not an error. */
    assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
    assert_int_equal(d.len, 0);
    assert_false(d.failed);
    fb_decoder_free(&d);
    free(buf);
    json_decref(h);
}

static void test_roundtrip_payload(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint8_t *pl = malloc(N);
    assert_non_null(pl);
    fill_pattern(pl, N, 3);
    pl[0] = 0; /* payload is raw bytes: NULs and all */
    pl[N - 1] = 0;
    json_t *h = fb_hdr_new("file_put", FB_PROTO_MAX_ID);
    uint8_t *buf = NULL;
    size_t len = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, pl, N, &buf, &len, &err), 0);
    char *text = json_dumps(h, JSON_COMPACT);
    assert_int_equal(len, FB_PROTO_PREFIX + strlen(text) + N);
    const uint8_t plen_be[4] = {0, (uint8_t)(N >> 16), (uint8_t)(N >> 8), (uint8_t)N};
    assert_memory_equal(buf + 4, plen_be, 4);

    fb_decoder d;
    fb_decoder_init(&d);
    assert_int_equal(fb_decoder_feed(&d, buf, len, &err), 0);
    fb_frame f;
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "file_put");
    assert_true(f.id == FB_PROTO_MAX_ID);
    assert_int_equal(f.payload_len, N);
    assert_non_null(f.payload);
    assert_memory_equal(f.payload, pl, N);
    fb_frame_clear(&f);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
    fb_decoder_free(&d);
    free(text);
    free(buf);
    free(pl);
    json_decref(h);
}

static void test_byte_by_byte(void **state)
{
    (void)state;
    const char pl[] = "chunk of output\n";
    json_t *h = fb_hdr_new("stdout", 42);
    uint8_t *buf = NULL;
    size_t len = 0;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, pl, sizeof pl - 1, &buf, &len, &err), 0);

    fb_decoder d;
    fb_decoder_init(&d);
    fb_frame f;
    for (size_t i = 0; i < len - 1; i++) {
        assert_int_equal(fb_decoder_feed(&d, buf + i, 1, &err), 0);
        assert_int_equal(d.len, i + 1);
        assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
        assert_null(f.hdr);
        assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME - (i + 1));
    }
    assert_int_equal(fb_decoder_feed(&d, buf + len - 1, 1, &err), 0);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "stdout");
    assert_true(f.id == 42);
    assert_int_equal(f.payload_len, sizeof pl - 1);
    assert_memory_equal(f.payload, pl, sizeof pl - 1);
    fb_frame_clear(&f);
    assert_int_equal(d.len, 0);
    assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME);
    fb_decoder_free(&d);
    free(buf);
    json_decref(h);
}

static void test_two_frames_one_buffer(void **state)
{
    (void)state;
    json_t *h1 = fb_hdr_new("stdout", 1), *h2 = fb_hdr_new("stderr", 2);
    uint8_t *b1, *b2;
    size_t l1, l2;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h1, "one", 3, &b1, &l1, &err), 0);
    assert_int_equal(fb_frame_encode(h2, NULL, 0, &b2, &l2, &err), 0);
    /* Both frames and the first 5 bytes of a third copy of frame 1. */
    uint8_t *all = malloc(l1 + l2 + 5);
    memcpy(all, b1, l1);
    memcpy(all + l1, b2, l2);
    memcpy(all + l1 + l2, b1, 5);

    fb_decoder d;
    fb_decoder_init(&d);
    assert_int_equal(fb_decoder_feed(&d, all, l1 + l2 + 5, &err), 0);
    fb_frame f;
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "stdout");
    assert_true(f.id == 1);
    assert_int_equal(f.payload_len, 3);
    assert_memory_equal(f.payload, "one", 3);
    fb_frame_clear(&f);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "stderr");
    assert_true(f.id == 2);
    assert_int_equal(f.payload_len, 0);
    fb_frame_clear(&f);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
    assert_int_equal(d.len, 5);
    /* The rest of the third frame completes it. */
    assert_int_equal(fb_decoder_feed(&d, b1 + 5, l1 - 5, &err), 0);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_true(f.id == 1);
    assert_memory_equal(f.payload, "one", 3);
    fb_frame_clear(&f);
    assert_int_equal(d.len, 0);
    fb_decoder_free(&d);
    free(all);
    free(b1);
    free(b2);
    json_decref(h1);
    json_decref(h2);
}

/* ---- length checks in the prefix ------------------------------------------ */

static void test_header_length_zero(void **state)
{
    (void)state;
    uint8_t p[8] = {0};
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err = {{0}};
    assert_int_equal(fb_decoder_feed(&d, p, 7, &err), 0);
    assert_int_equal(fb_decoder_feed(&d, p + 7, 1, &err), -1);
    assert_non_null(strstr(err.msg, "header length 0 outside 1..65536"));
    assert_poisoned(&d);
    fb_decoder_free(&d);
}

static void test_header_length_over_cap_fails_on_prefix(void **state)
{
    (void)state;
    const uint32_t bad[] = {FB_PROTO_MAX_HEADER + 1, 0x7fffffffu, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t p[8];
        put_be32(p, bad[i]);
        put_be32(p + 4, 0);
        fb_decoder d;
        fb_decoder_init(&d);
        fb_err err = {{0}};
        /* Seven bytes: cannot judge yet. */
        assert_int_equal(fb_decoder_feed(&d, p, 7, &err), 0);
        /* The eighth completes the prefix: refused at once, no body needed. */
        assert_int_equal(fb_decoder_feed(&d, p + 7, 1, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "header length %u outside", bad[i]);
        assert_non_null(strstr(err.msg, want));
        assert_true(d.len <= FB_PROTO_PREFIX);
        assert_poisoned(&d);
        fb_decoder_free(&d);
    }
}

static void test_header_length_at_cap_waits_for_body(void **state)
{
    (void)state;
    uint8_t p[8];
    put_be32(p, FB_PROTO_MAX_HEADER);
    put_be32(p + 4, FB_PROTO_MAX_PAYLOAD);
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err = {{0}};
    fb_frame f;
    assert_int_equal(fb_decoder_feed(&d, p, 8, &err), 0);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
    assert_false(d.failed);
    assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME - 8);
    fb_decoder_free(&d);
}

static void test_payload_length_over_cap(void **state)
{
    (void)state;
    const uint32_t bad[] = {FB_PROTO_MAX_PAYLOAD + 1, 0xffffffffu};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t p[8];
        put_be32(p, 20);
        put_be32(p + 4, bad[i]);
        fb_decoder d;
        fb_decoder_init(&d);
        fb_err err = {{0}};
        assert_int_equal(fb_decoder_feed(&d, p, 8, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "payload length %u exceeds 1048576", bad[i]);
        assert_non_null(strstr(err.msg, want));
        assert_poisoned(&d);
        fb_decoder_free(&d);
    }
}

/* ---- header validation ------------------------------------------------------ */

static void test_header_not_json(void **state)
{
    (void)state;
    expect_header_rejected("hello", "header is not valid JSON");
    expect_header_rejected("{\"t\":\"ping\",\"id\":1", "header is not valid JSON");
    expect_header_rejected("{\"t\":\"ping\",\"id\":1}}", "header is not valid JSON");
    expect_header_rejected("{\"t\":\"ping\",\"id\":1} {}", "header is not valid JSON");
    expect_header_rejected("{'t':'ping','id':1}", "header is not valid JSON");
    expect_header_rejected(" ", "header is not valid JSON");
    /* A NUL byte in the header text itself (outside any string). */
    expect_header_rejected_lit("{\"t\":\"ping\",\"id\":1}\0", "header is not valid JSON");
}

static void test_header_not_object(void **state)
{
    (void)state;
    expect_header_rejected("[\"ping\",1]", "header is not a JSON object");
    expect_header_rejected("[]", "header is not a JSON object");
    /* jansson refuses bare scalars unless asked to decode any value; either
     * way the frame is refused as "header is not ...". */
    expect_header_rejected("\"ping\"", "header is not");
    expect_header_rejected("42", "header is not");
    expect_header_rejected("null", "header is not");
    expect_header_rejected("true", "header is not");
}

static void test_header_type(void **state)
{
    (void)state;
    const char *no_t = "header has no valid \"t\"";
    expect_header_rejected("{\"id\":1}", no_t);
    expect_header_rejected("{\"T\":\"ping\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":1,\"id\":1}", no_t);
    expect_header_rejected("{\"t\":null,\"id\":1}", no_t);
    expect_header_rejected("{\"t\":[\"ping\"],\"id\":1}", no_t);
    expect_header_rejected("{\"t\":{},\"id\":1}", no_t);
    expect_header_rejected("{\"t\":true,\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"Ping\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"pi-ng\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"pi ng\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"ping\\n\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"../ping\",\"id\":1}", no_t);
    expect_header_rejected("{\"t\":\"p\xc3\xafng\",\"id\":1}", no_t);
    /* 33 characters: one over the cap. */
    expect_header_rejected("{\"t\":\"abcdefghijklmnopqrstuvwxyz_abcdef\",\"id\":1}", no_t);
    /* 32 characters and underscores are fine. */
    expect_header_ok("{\"t\":\"abcdefghijklmnopqrstuvwxyz_abcde\",\"id\":1}",
                     "abcdefghijklmnopqrstuvwxyz_abcde", 1);
    expect_header_ok("{\"t\":\"_\",\"id\":1}", "_", 1);
    expect_header_ok("{\"id\":3,\"t\":\"exec\",\"extra\":[1,{\"a\":null}]}", "exec", 3);
}

static void test_header_id(void **state)
{
    (void)state;
    const char *no_id = "header has no valid \"id\"";
    expect_header_rejected("{\"t\":\"ping\"}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":-1}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":-9223372036854775808}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1.5}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1.0}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1e3}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":\"1\"}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":null}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":true}", no_id);
    /* 2^53 is one above the largest id a double holds exactly. */
    expect_header_rejected("{\"t\":\"ping\",\"id\":9007199254740992}", no_id);
    expect_header_rejected("{\"t\":\"ping\",\"id\":9223372036854775807}", no_id);
    /* Beyond int64: jansson refuses to parse it at all. */
    expect_header_rejected("{\"t\":\"ping\",\"id\":18446744073709551616}", "header is not valid JSON");
    expect_header_ok("{\"t\":\"ping\",\"id\":0}", "ping", 0);
    expect_header_ok("{\"t\":\"ping\",\"id\":9007199254740991}", "ping", FB_PROTO_MAX_ID);
}

static void test_header_invalid_utf8(void **state)
{
    (void)state;
    const char *bad = "header is not valid JSON";
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"\xff\"}", bad);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"a\xc3\"}", bad);     /* truncated */
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"\xc0\xaf\"}", bad);  /* overlong '/' */
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"\xed\xa0\x80\"}", bad); /* surrogate */
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"\xf4\x90\x80\x80\"}", bad); /* > U+10FFFF */
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"\xfe\":1}", bad);          /* in a key */
    /* A lone surrogate escape is invalid too. */
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":\"\\ud800\"}", bad);
    /* Valid multi-byte UTF-8 and escapes are accepted. */
    expect_header_ok("{\"t\":\"ping\",\"id\":1,\"x\":\"\xe2\x82\xac \\u00e9 \\ud83d\\ude00\"}", "ping", 1);
}

static void test_header_nul_in_string(void **state)
{
    (void)state;
    const char *bad = "header is not valid JSON";
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"path\":\"/etc/passwd\\u0000.txt\"}", bad);
    expect_header_rejected("{\"t\":\"ping\\u0000\",\"id\":1}", bad);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"a\\u0000b\":1}", bad);
    /* A raw NUL byte inside a string. */
    expect_header_rejected_lit("{\"t\":\"ping\",\"id\":1,\"x\":\"a\0b\"}", bad);
}

static void test_header_duplicate_keys(void **state)
{
    (void)state;
    const char *bad = "header is not valid JSON";
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"id\":2}", bad);
    expect_header_rejected("{\"t\":\"ping\",\"t\":\"exec\",\"id\":1}", bad);
    expect_header_rejected("{\"t\":\"ping\",\"id\":1,\"x\":1,\"x\":1}", bad);
    /* Same key in different objects is not a duplicate. */
    expect_header_ok("{\"t\":\"ping\",\"id\":1,\"a\":{\"id\":2},\"b\":{\"id\":3}}", "ping", 1);
}

/* ---- poisoning -------------------------------------------------------------- */

static void test_failed_decoder_stays_failed(void **state)
{
    (void)state;
    json_t *h = fb_hdr_new("ping", 1);
    uint8_t *good;
    size_t glen;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, NULL, 0, &good, &glen, &err), 0);
    size_t blen;
    uint8_t *bad = raw_frame("[1]", 3, NULL, 0, &blen);

    fb_decoder d;
    fb_decoder_init(&d);
    /* A bad frame followed by a good one in the same buffer. */
    assert_int_equal(fb_decoder_feed(&d, bad, blen, &err), 0);
    assert_int_equal(fb_decoder_feed(&d, good, glen, &err), 0);
    fb_frame f;
    assert_int_equal(fb_decoder_next(&d, &f, &err), -1);
    assert_non_null(strstr(err.msg, "not a JSON object"));
    /* The good frame behind it is never handed out, and new input is refused,
     * however many times the caller tries. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(fb_decoder_next(&d, &f, &err), -1);
        assert_null(f.hdr);
        assert_int_equal(fb_decoder_feed(&d, good, glen, &err), -1);
        assert_non_null(strstr(err.msg, "channel already failed"));
    }
    assert_poisoned(&d);
    fb_decoder_free(&d);
    /* fb_decoder_free leaves a clean, usable decoder. */
    assert_false(d.failed);
    assert_int_equal(fb_decoder_feed(&d, good, glen, &err), 0);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    fb_frame_clear(&f);
    fb_decoder_free(&d);
    free(good);
    free(bad);
    json_decref(h);
}

static void test_bad_prefix_after_good_frame(void **state)
{
    (void)state;
    /* A valid frame, then a prefix announcing a 4 GiB header.  The valid
     * frame completes the buffer first; the bad prefix behind it must fail
     * the decoder no later than when the good frame is taken. */
    json_t *h = fb_hdr_new("ping", 5);
    uint8_t *good;
    size_t glen;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, NULL, 0, &good, &glen, &err), 0);
    uint8_t *all = malloc(glen + 8);
    memcpy(all, good, glen);
    put_be32(all + glen, 0xffffffffu);
    put_be32(all + glen + 4, 0);
    fb_decoder d;
    fb_decoder_init(&d);
    fb_frame f;
    int r = fb_decoder_feed(&d, all, glen + 8, &err);
    if (r == 0) {
        r = fb_decoder_next(&d, &f, &err);
        if (r == 1) {
            /* Handing out the good frame first is fine; the next call must fail. */
            assert_true(f.id == 5);
            fb_frame_clear(&f);
            r = fb_decoder_next(&d, &f, &err);
        }
    }
    assert_int_equal(r, -1);
    assert_non_null(strstr(err.msg, "header length 4294967295"));
    assert_poisoned(&d);
    fb_decoder_free(&d);
    free(all);
    free(good);
    json_decref(h);
}

/* ---- caps ------------------------------------------------------------------- */

/* A header that serialises compactly to exactly `want` bytes. */
static json_t *header_of_size(size_t want)
{
    json_t *h = fb_hdr_new("file_put", 9);
    json_object_set_new(h, "pad", json_string(""));
    char *t = json_dumps(h, JSON_COMPACT);
    size_t base = strlen(t);
    free(t);
    assert_true(want >= base);
    char *pad = malloc(want - base + 1);
    memset(pad, 'x', want - base);
    pad[want - base] = '\0';
    json_object_set_new(h, "pad", json_string(pad));
    free(pad);
    t = json_dumps(h, JSON_COMPACT);
    assert_int_equal(strlen(t), want);
    free(t);
    return h;
}

static void test_encode_refuses_oversized(void **state)
{
    (void)state;
    uint8_t *pl = calloc(1, FB_PROTO_MAX_PAYLOAD + 1);
    json_t *h = fb_hdr_new("file_put", 1);
    uint8_t *out = (uint8_t *)0x1;
    size_t len = 12345;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, pl, FB_PROTO_MAX_PAYLOAD + 1, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "payload of 1048577 bytes exceeds the 1048576-byte frame cap"));
    assert_ptr_equal(out, (uint8_t *)0x1);
    assert_int_equal(len, 12345);
    assert_int_equal(fb_frame_encode(h, pl, SIZE_MAX, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "payload of"));

    json_t *big = header_of_size(FB_PROTO_MAX_HEADER + 1);
    memset(&err, 0, sizeof err);
    assert_int_equal(fb_frame_encode(big, NULL, 0, &out, &len, &err), -1);
    assert_non_null(strstr(err.msg, "header of 65537 bytes exceeds the 65536-byte cap"));
    assert_ptr_equal(out, (uint8_t *)0x1);

    /* A channel refuses it the same way and queues nothing. */
    fb_chan c;
    fb_chan_init(&c, -1);
    assert_int_equal(fb_chan_send(&c, h, pl, FB_PROTO_MAX_PAYLOAD + 1, &err), -1);
    assert_non_null(strstr(err.msg, "payload of 1048577 bytes"));
    assert_int_equal(fb_chan_send(&c, big, NULL, 0, &err), -1);
    assert_int_equal(fb_chan_queued(&c), 0);
    fb_chan_free(&c);
    json_decref(big);
    json_decref(h);
    free(pl);
}

static void check_maximal_frame(size_t chunk)
{
    json_t *h = header_of_size(FB_PROTO_MAX_HEADER);
    uint8_t *pl = malloc(FB_PROTO_MAX_PAYLOAD);
    fill_pattern(pl, FB_PROTO_MAX_PAYLOAD, 11);
    uint8_t *buf;
    size_t len;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, pl, FB_PROTO_MAX_PAYLOAD, &buf, &len, &err), 0);
    assert_int_equal(len, FB_PROTO_MAX_FRAME);

    fb_decoder d;
    fb_decoder_init(&d);
    fb_frame f;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        assert_true(n <= fb_decoder_room(&d));
        assert_int_equal(fb_decoder_feed(&d, buf + off, n, &err), 0);
        assert_true(d.len <= FB_PROTO_MAX_FRAME);
        assert_true(d.cap <= FB_PROTO_MAX_FRAME);
        assert_true(fb_decoder_room(&d) <= FB_PROTO_MAX_FRAME);
        if (off + n < len)
            assert_int_equal(fb_decoder_next(&d, &f, &err), 0);
    }
    assert_int_equal(fb_decoder_room(&d), 0);
    assert_int_equal(fb_decoder_next(&d, &f, &err), 1);
    assert_string_equal(f.type, "file_put");
    assert_true(f.id == 9);
    assert_int_equal(f.payload_len, FB_PROTO_MAX_PAYLOAD);
    assert_true(has_pattern(f.payload, f.payload_len, 11));
    assert_true(json_equal(f.hdr, h));
    fb_frame_clear(&f);
    assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME);
    fb_decoder_free(&d);
    free(buf);
    free(pl);
    json_decref(h);
}

static void test_maximal_frame_decodes(void **state)
{
    (void)state;
    check_maximal_frame(FB_PROTO_MAX_FRAME); /* in one feed */
    check_maximal_frame(4093);               /* in odd-sized pieces */
}

static void test_room_never_exceeds_max_frame(void **state)
{
    (void)state;
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err = {{0}};
    assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME);
    /* A maximal frame plus one more byte fed in one call: the decoder must
     * refuse rather than buffer past one maximal frame. */
    json_t *h = header_of_size(FB_PROTO_MAX_HEADER);
    uint8_t *pl = calloc(1, FB_PROTO_MAX_PAYLOAD);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fb_frame_encode(h, pl, FB_PROTO_MAX_PAYLOAD, &buf, &len, &err), 0);
    uint8_t *more = malloc(len + 1);
    memcpy(more, buf, len);
    more[len] = 0;
    assert_int_equal(fb_decoder_feed(&d, more, len + 1, &err), -1);
    assert_non_null(strstr(err.msg, "more than one maximal frame"));
    assert_true(d.len <= FB_PROTO_MAX_FRAME);
    assert_true(d.cap <= FB_PROTO_MAX_FRAME);
    assert_true(fb_decoder_room(&d) <= FB_PROTO_MAX_FRAME);
    fb_decoder_free(&d);

    /* Room shrinks by exactly what is buffered. */
    fb_decoder_init(&d);
    assert_int_equal(fb_decoder_feed(&d, buf, 1000, &err), 0);
    assert_int_equal(fb_decoder_room(&d), FB_PROTO_MAX_FRAME - 1000);
    fb_decoder_free(&d);
    free(more);
    free(buf);
    free(pl);
    json_decref(h);
}

/* ---- channel over a socketpair -------------------------------------------- */

static void make_pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void test_chan_send_recv(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    fb_chan a, b;
    fb_chan_init(&a, sv[0]);
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    for (uint64_t id = 1; id <= 3; id++) {
        json_t *h = fb_hdr_new("stdout", id);
        json_object_set_new(h, "seq", json_integer((json_int_t)id * 10));
        assert_int_equal(fb_chan_send(&a, h, "abc", (size_t)id, &err), 0);
        json_decref(h);
    }
    assert_true(fb_chan_queued(&a) > 0);
    assert_int_equal(fb_chan_flush_all(&a, 5000, &err), 0);
    assert_int_equal(fb_chan_queued(&a), 0);
    for (uint64_t id = 1; id <= 3; id++) {
        fb_frame f;
        assert_int_equal(fb_chan_recv(&b, &f, 5000, &err), 0);
        assert_string_equal(f.type, "stdout");
        assert_true(f.id == id);
        assert_int_equal(json_integer_value(json_object_get(f.hdr, "seq")), (json_int_t)id * 10);
        assert_int_equal(f.payload_len, id);
        assert_memory_equal(f.payload, "abc", id);
        fb_frame_clear(&f);
    }
    assert_false(b.eof);
    fb_chan_free(&a);
    fb_chan_free(&b);
    close(sv[0]);
    close(sv[1]);
}

struct writer {
    int fd;
    size_t len;
    int rc;
    fb_err err;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    fb_chan c;
    fb_chan_init(&c, w->fd);
    uint8_t *pl = malloc(w->len);
    fill_pattern(pl, w->len, 77);
    json_t *h = fb_hdr_new("file_data", 77);
    w->rc = fb_chan_send(&c, h, pl, w->len, &w->err);
    if (w->rc == 0)
        w->rc = fb_chan_flush_all(&c, 20000, &w->err);
    json_decref(h);
    free(pl);
    fb_chan_free(&c);
    return NULL;
}

static void test_chan_one_mib_payload(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    /* Blocking ends and a 1 MiB frame: far more than a socket buffer, so the
     * writer must block in write while the reader reassembles. */
    struct writer w = {.fd = sv[0], .len = FB_PROTO_MAX_PAYLOAD, .rc = -7};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer_main, &w), 0);
    fb_chan b;
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    fb_frame f;
    int r = fb_chan_recv(&b, &f, 20000, &err);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (w.rc != 0)
        print_error("writer: %s\n", w.err.msg);
    assert_int_equal(w.rc, 0);
    if (r != 0)
        print_error("recv: %s\n", err.msg);
    assert_int_equal(r, 0);
    assert_string_equal(f.type, "file_data");
    assert_true(f.id == 77);
    assert_int_equal(f.payload_len, FB_PROTO_MAX_PAYLOAD);
    assert_true(has_pattern(f.payload, f.payload_len, 77));
    fb_frame_clear(&f);
    fb_chan_free(&b);
    close(sv[0]);
    close(sv[1]);
}

static void test_chan_recv_timeout(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    fb_chan b;
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    fb_frame f;
    uint64_t t0 = fb_now_ns();
    assert_int_equal(fb_chan_recv(&b, &f, 100, &err), -1);
    /* It waited at least the timeout (no upper bound: machines are noisy). */
    assert_true(fb_now_ns() - t0 >= 100ull * 1000000ull);
    assert_non_null(strstr(err.msg, "timed out"));
    assert_null(f.hdr);
    assert_false(b.eof);

    /* A partial frame is not a frame: still a timeout. */
    json_t *h = fb_hdr_new("ping", 1);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fb_frame_encode(h, NULL, 0, &buf, &len, &err), 0);
    assert_int_equal(fb_write_all(sv[0], buf, len - 1), 0);
    memset(&err, 0, sizeof err);
    assert_int_equal(fb_chan_recv(&b, &f, 50, &err), -1);
    assert_non_null(strstr(err.msg, "timed out"));
    /* The last byte completes it. */
    assert_int_equal(fb_write_all(sv[0], buf + len - 1, 1), 0);
    assert_int_equal(fb_chan_recv(&b, &f, 5000, &err), 0);
    assert_string_equal(f.type, "ping");
    fb_frame_clear(&f);
    /* Timeout 0 with nothing pending returns at once with the same error. */
    assert_int_equal(fb_chan_recv(&b, &f, 0, &err), -1);
    assert_non_null(strstr(err.msg, "timed out"));
    free(buf);
    json_decref(h);
    fb_chan_free(&b);
    close(sv[0]);
    close(sv[1]);
}

static void test_chan_recv_eof(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    fb_chan b;
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    /* The peer sends one frame and half of another, then closes. */
    json_t *h = fb_hdr_new("exit", 4);
    uint8_t *buf;
    size_t len;
    assert_int_equal(fb_frame_encode(h, "x", 1, &buf, &len, &err), 0);
    assert_int_equal(fb_write_all(sv[0], buf, len), 0);
    assert_int_equal(fb_write_all(sv[0], buf, len / 2), 0);
    close(sv[0]);
    fb_frame f;
    /* Frames that arrived before EOF are still delivered... */
    assert_int_equal(fb_chan_recv(&b, &f, 5000, &err), 0);
    assert_string_equal(f.type, "exit");
    assert_true(f.id == 4);
    fb_frame_clear(&f);
    /* ...then EOF is reported, not a timeout, and well before it. */
    uint64_t t0 = fb_now_ns();
    assert_int_equal(fb_chan_recv(&b, &f, 60000, &err), -1);
    assert_true(fb_now_ns() - t0 < 30ull * 1000000000ull);
    assert_non_null(strstr(err.msg, "closed"));
    assert_true(b.eof);
    assert_null(f.hdr);
    /* And again, without blocking. */
    assert_int_equal(fb_chan_recv(&b, &f, -1, &err), -1);
    assert_non_null(strstr(err.msg, "closed"));
    free(buf);
    json_decref(h);
    fb_chan_free(&b);
    close(sv[1]);
}

static void test_chan_recv_protocol_error(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    fb_chan b;
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    uint8_t p[8];
    put_be32(p, 0x01000000u); /* 16 MiB header */
    put_be32(p + 4, 0);
    assert_int_equal(fb_write_all(sv[0], p, 8), 0);
    fb_frame f;
    assert_int_equal(fb_chan_recv(&b, &f, 5000, &err), -1);
    assert_non_null(strstr(err.msg, "header length 16777216"));
    assert_true(b.dec.failed);
    assert_int_equal(fb_chan_recv(&b, &f, 0, &err), -1);
    assert_non_null(strstr(err.msg, "already failed"));
    fb_chan_free(&b);
    close(sv[0]);
    close(sv[1]);
}

static json_t *data_hdr(uint64_t id)
{
    return fb_hdr_new("stdout", id);
}

static void test_chan_queue_cap(void **state)
{
    (void)state;
    int sv[2];
    make_pair(sv);
    int small = 64 * 1024;
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    assert_int_equal(fb_set_nonblock(sv[0], true), 0);
    assert_int_equal(fb_set_nonblock(sv[1], true), 0);
    fb_chan a, b;
    fb_chan_init(&a, sv[0]);
    fb_chan_init(&b, sv[1]);
    fb_err err = {{0}};
    const size_t plen = 300 * 1000; /* frames do not divide the cap evenly */
    uint8_t *pl = malloc(plen);
    /* Nothing to read yet: a non-blocking read says so rather than block. */
    assert_int_equal(fb_chan_read(&b, &err), -2);
    assert_false(b.eof);

    /* The peer never reads: queue and flush until the queue refuses. */
    uint64_t sent = 0;
    int rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        json_t *h = data_hdr(sent + 1);
        fill_pattern(pl, plen, sent + 1);
        size_t before = fb_chan_queued(&a);
        rc = fb_chan_send(&a, h, pl, plen, &err);
        json_decref(h);
        if (rc == 0) {
            sent++;
            assert_true(fb_chan_queued(&a) <= FB_CHAN_MAX_QUEUED);
            assert_int_equal(fb_chan_flush(&a, &err), 0);
        } else {
            /* Refused whole: nothing of the frame was queued. */
            assert_int_equal(fb_chan_queued(&a), before);
        }
    }
    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.msg, "send queue full"));
    size_t frame_len;
    {
        json_t *h = data_hdr(sent + 1);
        char *t = json_dumps(h, JSON_COMPACT);
        frame_len = FB_PROTO_PREFIX + strlen(t) + plen;
        free(t);
        json_decref(h);
    }
    assert_true(fb_chan_queued(&a) <= FB_CHAN_MAX_QUEUED);
    assert_true(fb_chan_queued(&a) + frame_len > FB_CHAN_MAX_QUEUED);
    /* Smaller frames that still fit are accepted up to the cap exactly. */
    size_t spare = FB_CHAN_MAX_QUEUED - fb_chan_queued(&a);
    if (spare > 200) {
        json_t *h = data_hdr(sent + 1);
        char *t = json_dumps(h, JSON_COMPACT);
        size_t fit = spare - FB_PROTO_PREFIX - strlen(t);
        free(t);
        fill_pattern(pl, fit, sent + 1);
        assert_int_equal(fb_chan_send(&a, h, pl, fit, &err), 0);
        assert_int_equal(fb_chan_queued(&a), FB_CHAN_MAX_QUEUED);
        json_decref(h);
        sent++;
        h = data_hdr(sent + 1);
        assert_int_equal(fb_chan_send(&a, h, NULL, 0, &err), -1);
        assert_non_null(strstr(err.msg, "send queue full"));
        json_decref(h);
    }
    /* The full socket makes flush a no-op, not an error. */
    size_t q = fb_chan_queued(&a);
    assert_int_equal(fb_chan_flush(&a, &err), 0);
    assert_int_equal(fb_chan_queued(&a), q);
    /* flush_all gives up after its timeout with a message. */
    assert_int_equal(fb_chan_flush_all(&a, 30, &err), -1);
    assert_non_null(strstr(err.msg, "timed out writing"));

    /* Now the peer reads: every accepted frame arrives intact and in order,
     * interleaved with more sends (which exercises queue compaction). */
    uint64_t got = 0;
    uint64_t extra = 0;
    for (int iter = 0; iter < 1000000 && (got < sent || fb_chan_queued(&a) > 0); iter++) {
        assert_int_equal(fb_chan_flush(&a, &err), 0);
        long n = fb_chan_read(&b, &err);
        assert_true(n > 0 || n == -2);
        fb_frame f;
        int r;
        while ((r = fb_decoder_next(&b.dec, &f, &err)) == 1) {
            got++;
            assert_true(f.id == got);
            assert_string_equal(f.type, "stdout");
            assert_true(has_pattern(f.payload, f.payload_len, got));
            fb_frame_clear(&f);
        }
        assert_int_equal(r, 0);
        if (extra < 5 && got > 0 && got % 3 == 0 && fb_chan_queued(&a) + 2 * plen < FB_CHAN_MAX_QUEUED) {
            json_t *h = data_hdr(sent + 1);
            fill_pattern(pl, plen, sent + 1);
            assert_int_equal(fb_chan_send(&a, h, pl, plen, &err), 0);
            json_decref(h);
            sent++;
            extra++;
        }
    }
    assert_int_equal(got, sent);
    assert_int_equal(fb_chan_queued(&a), 0);
    free(pl);
    fb_chan_free(&a);
    fb_chan_free(&b);
    close(sv[0]);
    close(sv[1]);
}

/* ---- header field helpers --------------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    return j;
}

static void test_hdr_str(void **state)
{
    (void)state;
    json_t *h = parse("{\"path\":\"/work/a\",\"n\":5,\"e\":\"\",\"nul\":null,\"arr\":[\"x\"]}");
    fb_err err = {{0}};
    const char *s = "unset";
    assert_int_equal(fb_hdr_str(h, "path", true, 64, &s, &err), 0);
    assert_string_equal(s, "/work/a");
    /* Exactly at the limit is fine; one byte less is not. */
    assert_int_equal(fb_hdr_str(h, "path", true, 7, &s, &err), 0);
    s = "unset";
    assert_int_equal(fb_hdr_str(h, "path", true, 6, &s, &err), -1);
    assert_string_equal(s, "unset");
    assert_string_equal(err.msg, "field \"path\" longer than 6 bytes");
    assert_int_equal(fb_hdr_str(h, "e", true, 0, &s, &err), 0);
    assert_string_equal(s, "");
    /* Missing: required fails, optional gives NULL. */
    assert_int_equal(fb_hdr_str(h, "cwd", true, 64, &s, &err), -1);
    assert_string_equal(err.msg, "missing field \"cwd\"");
    s = "unset";
    assert_int_equal(fb_hdr_str(h, "cwd", false, 64, &s, &err), 0);
    assert_null(s);
    /* Wrong types, required or not. */
    const char *wrong[] = {"n", "nul", "arr"};
    for (size_t i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "field \"%s\" must be a string", wrong[i]);
        s = "unset";
        assert_int_equal(fb_hdr_str(h, wrong[i], false, 64, &s, &err), -1);
        assert_string_equal(err.msg, want);
        assert_string_equal(s, "unset");
        assert_int_equal(fb_hdr_str(h, wrong[i], true, 64, &s, &err), -1);
        assert_string_equal(err.msg, want);
    }
    /* Length is in bytes, not characters. */
    json_t *u = parse("{\"s\":\"\xc3\xa9\xc3\xa9\"}");
    assert_int_equal(fb_hdr_str(u, "s", true, 3, &s, &err), -1);
    assert_non_null(strstr(err.msg, "longer than 3 bytes"));
    assert_int_equal(fb_hdr_str(u, "s", true, 4, &s, &err), 0);
    json_decref(u);
    json_decref(h);
}

static void test_hdr_u64(void **state)
{
    (void)state;
    json_t *h = parse("{\"a\":0,\"b\":1000,\"neg\":-1,\"real\":1.0,\"str\":\"5\",\"t\":true,\"nul\":null,"
                      "\"big\":9223372036854775807}");
    fb_err err = {{0}};
    uint64_t v = 99;
    assert_int_equal(fb_hdr_u64(h, "a", true, 10, &v, &err), 0);
    assert_true(v == 0);
    assert_int_equal(fb_hdr_u64(h, "b", true, 1000, &v, &err), 0);
    assert_true(v == 1000);
    v = 99;
    assert_int_equal(fb_hdr_u64(h, "b", true, 999, &v, &err), -1);
    assert_string_equal(err.msg, "field \"b\" exceeds 999");
    assert_true(v == 99);
    assert_int_equal(fb_hdr_u64(h, "big", true, UINT64_MAX, &v, &err), 0);
    assert_true(v == 9223372036854775807ull);
    assert_int_equal(fb_hdr_u64(h, "big", true, FB_PROTO_MAX_ID, &v, &err), -1);
    assert_string_equal(err.msg, "field \"big\" exceeds 9007199254740991");
    /* Missing: required fails; optional leaves the caller's default. */
    assert_int_equal(fb_hdr_u64(h, "timeout_ms", true, 10, &v, &err), -1);
    assert_string_equal(err.msg, "missing field \"timeout_ms\"");
    v = 1234;
    assert_int_equal(fb_hdr_u64(h, "timeout_ms", false, 10, &v, &err), 0);
    assert_true(v == 1234);
    const char *wrong[] = {"neg", "real", "str", "t", "nul"};
    for (size_t i = 0; i < 5; i++) {
        char want[80];
        snprintf(want, sizeof want, "field \"%s\" must be a non-negative integer", wrong[i]);
        v = 1234;
        assert_int_equal(fb_hdr_u64(h, wrong[i], false, UINT64_MAX, &v, &err), -1);
        assert_string_equal(err.msg, want);
        assert_true(v == 1234);
    }
    json_decref(h);
}

static void test_hdr_bool(void **state)
{
    (void)state;
    json_t *h = parse("{\"y\":true,\"n\":false,\"one\":1,\"s\":\"true\",\"nul\":null}");
    fb_err err = {{0}};
    bool b = false;
    assert_int_equal(fb_hdr_bool(h, "y", &b, &err), 0);
    assert_true(b);
    assert_int_equal(fb_hdr_bool(h, "n", &b, &err), 0);
    assert_false(b);
    /* Missing leaves the default, either way. */
    b = true;
    assert_int_equal(fb_hdr_bool(h, "stdin", &b, &err), 0);
    assert_true(b);
    b = false;
    assert_int_equal(fb_hdr_bool(h, "stdin", &b, &err), 0);
    assert_false(b);
    const char *wrong[] = {"one", "s", "nul"};
    for (size_t i = 0; i < 3; i++) {
        char want[64];
        snprintf(want, sizeof want, "field \"%s\" must be true or false", wrong[i]);
        b = false;
        assert_int_equal(fb_hdr_bool(h, wrong[i], &b, &err), -1);
        assert_string_equal(err.msg, want);
        assert_false(b);
    }
    json_decref(h);
}

static void test_hdr_only(void **state)
{
    (void)state;
    const char *const allowed[] = {"t", "id", "argv", "cwd", NULL};
    const char *const none[] = {NULL};
    fb_err err = {{0}};
    json_t *h = parse("{\"t\":\"exec\",\"id\":1,\"argv\":[]}");
    assert_int_equal(fb_hdr_only(h, allowed, &err), 0);
    assert_int_equal(fb_hdr_only(h, none, &err), -1);
    assert_non_null(strstr(err.msg, "unknown field \""));
    json_decref(h);
    h = parse("{}");
    assert_int_equal(fb_hdr_only(h, none, &err), 0);
    json_decref(h);
    h = parse("{\"t\":\"exec\",\"id\":1,\"env\":{}}");
    assert_int_equal(fb_hdr_only(h, allowed, &err), -1);
    assert_string_equal(err.msg, "unknown field \"env\"");
    json_decref(h);
    /* Prefixes and case do not match. */
    h = parse("{\"ARGV\":1}");
    assert_int_equal(fb_hdr_only(h, allowed, &err), -1);
    assert_string_equal(err.msg, "unknown field \"ARGV\"");
    json_decref(h);
    h = parse("{\"cw\":1}");
    assert_int_equal(fb_hdr_only(h, allowed, &err), -1);
    json_decref(h);
    /* A huge unknown key is named, truncated, in the message. */
    char key[1001];
    memset(key, 'k', 1000);
    key[1000] = '\0';
    h = json_object();
    json_object_set_new(h, key, json_true());
    assert_int_equal(fb_hdr_only(h, allowed, &err), -1);
    char want[96];
    snprintf(want, sizeof want, "unknown field \"%.64s\"", key);
    assert_string_equal(err.msg, want);
    json_decref(h);
}

static void test_hdr_new(void **state)
{
    (void)state;
    json_t *h = fb_hdr_new("ready", 12);
    assert_non_null(h);
    assert_int_equal(json_object_size(h), 2);
    assert_string_equal(json_string_value(json_object_get(h, "t")), "ready");
    assert_int_equal(json_integer_value(json_object_get(h, "id")), 12);
    json_decref(h);
}

/* ---- typed messages (proto/msg.h, proto/errors.h) ------------------------------ */

/* Encodes h (taken) into a frame and decodes it back into *f. */
static void to_frame(json_t *h, const void *payload, size_t len, fb_frame *f)
{
    assert_non_null(h);
    uint8_t *buf;
    size_t n;
    fb_err err = {{0}};
    assert_int_equal(fb_frame_encode(h, payload, len, &buf, &n, &err), 0);
    json_decref(h);
    fb_decoder d;
    fb_decoder_init(&d);
    assert_int_equal(fb_decoder_feed(&d, buf, n, &err), 0);
    assert_int_equal(fb_decoder_next(&d, f, &err), 1);
    fb_decoder_free(&d);
    free(buf);
}

static void test_errc_names_round_trip(void **state)
{
    (void)state;
    for (int c = 1; c < FB_ERRC_COUNT; c++)
        assert_int_equal(fb_errc_parse(fb_errc_name((fb_errc)c)), c == FB_E_OTHER ? FB_E_OTHER : c);
    assert_string_equal(fb_errc_name(FB_E_TOO_LARGE), "too_large");
    assert_string_equal(fb_errc_name(FB_E_NOT_FOUND), "not_found");
    assert_int_equal(fb_errc_parse("made_up"), FB_E_OTHER);
    assert_int_equal(fb_errc_parse(NULL), FB_E_OTHER);
    assert_string_equal(fb_errc_name((fb_errc)999), "internal");
    for (int t = 1; t < FB_MSG_TYPE_COUNT; t++) {
        fb_frame f;
        to_frame(fb_hdr_new(fb_msg_type_name((fb_msg_type)t), 1), NULL, 0, &f);
        assert_int_equal(fb_msg_type_of(&f), t);
        fb_frame_clear(&f);
    }
}

static void test_exec_round_trip(void **state)
{
    (void)state;
    const char *argv[] = {"sh", "-c", "echo \xc3\xa9", NULL};
    fb_env_var env[] = {{"A", "1"}, {"LANG", "C.UTF-8"}, {"EMPTY", ""}};
    fb_msg_exec m = {.argv = argv, .argc = 3, .env = env, .nenv = 3, .cwd = "/tmp",
                     .timeout_ms = 5000, .max_output = 77, .stdin_pipe = true};
    fb_errc code;
    fb_err err = {{0}};
    fb_frame f;
    to_frame(fb_msg_encode_exec(42, &m, &code, &err), NULL, 0, &f);
    assert_int_equal(code, FB_OK);
    fb_msg_exec d;
    assert_int_equal(fb_msg_decode_exec(&f, &d, &err), 0);
    assert_int_equal(d.argc, 3);
    assert_string_equal(d.argv[2], "echo \xc3\xa9");
    assert_null(d.argv[3]);
    assert_int_equal(d.nenv, 3);
    for (size_t i = 0; i < 3; i++) {
        bool found = false;
        for (size_t j = 0; j < 3; j++)
            found |= strcmp(d.env[j].key, env[i].key) == 0 && strcmp(d.env[j].value, env[i].value) == 0;
        assert_true(found);
    }
    assert_string_equal(d.cwd, "/tmp");
    assert_int_equal(d.timeout_ms, 5000);
    assert_int_equal(d.max_output, 77);
    assert_true(d.stdin_pipe);
    fb_msg_exec_free(&d);
    fb_frame_clear(&f);
}

/* hello's "net": sent only when true, absent means false, a non-boolean
 * is refused (the agent starts the egress bridge only on a real true). */
static void test_hello_net_flag(void **state)
{
    (void)state;
    fb_err err = {{0}};
    for (int net = 0; net < 2; net++) {
        fb_msg_hello m = {.version = 1, .workspace_mib = 8, .tmp_mib = 8, .nproc = 64, .nofile = 64,
                          .max_output = 1024, .net = net};
        json_t *h = fb_msg_encode_hello(7, &m, &err);
        assert_non_null(h);
        assert_true((json_object_get(h, "net") != NULL) == (net == 1));
        fb_frame f;
        to_frame(h, NULL, 0, &f);
        fb_msg_hello d;
        assert_int_equal(fb_msg_decode_hello(&f, &d, &err), 0);
        assert_int_equal(d.net, net);
        fb_frame_clear(&f);
    }
    json_error_t jerr;
    json_t *h = json_loads("{\"t\":\"hello\",\"id\":1,\"version\":1,\"net\":1}", 0, &jerr);
    assert_non_null(h);
    fb_frame f;
    to_frame(h, NULL, 0, &f);
    fb_msg_hello d;
    assert_int_equal(fb_msg_decode_hello(&f, &d, &err), -1);
    assert_non_null(strstr(err.msg, "net"));
    fb_frame_clear(&f);
}

/* hello's fresh start for VMs (seed, time_sec/time_nsec): round trip,
 * absent when not set, and refused when malformed - a short or non-hex
 * seed, a nanosecond count beyond a second, one time field without the
 * other. */
static void test_hello_seed_and_time(void **state)
{
    (void)state;
    fb_err err = {{0}};
    fb_msg_hello m = {.version = 1, .workspace_mib = 8, .tmp_mib = 8, .nproc = 64, .nofile = 64,
                      .max_output = 1024, .has_seed = true, .has_time = true,
                      .time_sec = 1796215441, .time_nsec = 999999999};
    for (size_t i = 0; i < sizeof m.seed; i++)
        m.seed[i] = (uint8_t)(i * 37 + 1);
    json_t *h = fb_msg_encode_hello(7, &m, &err);
    assert_non_null(h);
    assert_int_equal(strlen(json_string_value(json_object_get(h, "seed"))), 2 * FB_HELLO_SEED_BYTES);
    fb_frame f;
    to_frame(h, NULL, 0, &f);
    fb_msg_hello d;
    assert_int_equal(fb_msg_decode_hello(&f, &d, &err), 0);
    assert_true(d.has_seed && d.has_time);
    assert_memory_equal(d.seed, m.seed, sizeof m.seed);
    assert_int_equal(d.time_sec, 1796215441);
    assert_int_equal(d.time_nsec, 999999999);
    fb_frame_clear(&f);

    fb_msg_hello plain = {.version = 1, .workspace_mib = 8, .tmp_mib = 8, .nproc = 64, .nofile = 64,
                          .max_output = 1024};
    h = fb_msg_encode_hello(8, &plain, &err);
    assert_null(json_object_get(h, "seed"));
    assert_null(json_object_get(h, "time_sec"));
    to_frame(h, NULL, 0, &f);
    assert_int_equal(fb_msg_decode_hello(&f, &d, &err), 0);
    assert_false(d.has_seed || d.has_time);
    fb_frame_clear(&f);

    static const char *const bad[] = {
        "{\"t\":\"hello\",\"id\":1,\"version\":1,\"seed\":\"00ff\"}",
        "{\"t\":\"hello\",\"id\":1,\"version\":1,\"seed\":\"0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000G\"}",
        "{\"t\":\"hello\",\"id\":1,\"version\":1,\"seed\":\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\"}",
        "{\"t\":\"hello\",\"id\":1,\"version\":1,\"time_sec\":5}",
        "{\"t\":\"hello\",\"id\":1,\"version\":1,\"time_sec\":5,\"time_nsec\":1000000000}",
        NULL,
    };
    for (const char *const *b = bad; *b; b++) {
        json_error_t jerr;
        h = json_loads(*b, 0, &jerr);
        assert_non_null(h);
        to_frame(h, NULL, 0, &f);
        assert_int_equal(fb_msg_decode_hello(&f, &d, &err), -1);
        fb_frame_clear(&f);
    }
}

/* ---- relay: two ends wired back to back through real frames ------------- */

typedef struct relay_wire {
    fb_frame q[4096];
    size_t n;
    int closes;
} relay_wire;

static int wire_send(void *ctx, json_t *h, const void *p, size_t len)
{
    relay_wire *w = ctx;
    assert_true(w->n < 4096);
    if (strcmp(json_string_value(json_object_get(h, "t")), "net_close") == 0)
        w->closes++;
    to_frame(h, p, len, &w->q[w->n++]);
    return 0;
}

static void wire_deliver(relay_wire *w, fb_relay *to)
{
    for (size_t i = 0; i < w->n; i++) {
        fb_relay_frame(to, &w->q[i]);
        fb_frame_clear(&w->q[i]);
    }
    w->n = 0;
}

static void pump(fb_relay *r)
{
    struct pollfd fds[FB_NET_MAX_STREAMS];
    size_t n = fb_relay_pollfds(r, fds, FB_NET_MAX_STREAMS, true);
    if (n && poll(fds, n, 0) > 0)
        fb_relay_io(r, fds, n);
}

static void test_relay_carries_bytes_both_ways_and_half_closes(void **state)
{
    (void)state;
    static fb_relay a, b;
    static relay_wire wa, wb; /* wa: frames a sent (for b); wb: for a */
    memset(&wa, 0, sizeof wa);
    memset(&wb, 0, sizeof wb);
    fb_relay_init(&a, wire_send, &wa);
    fb_relay_init(&b, wire_send, &wb);
    int x[2], y[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, x), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, y), 0);
    assert_int_equal(fb_relay_add(&a, 5, x[0]), 0);
    assert_int_equal(fb_relay_add(&b, 5, y[0]), 0);
    assert_int_equal(fb_relay_add(&b, 5, y[0]), -1); /* the id is taken */
    enum { TOTAL = 1024 * 1024 + 333 };
    static uint8_t out[TOTAL], in[TOTAL];
    for (size_t i = 0; i < TOTAL; i++)
        out[i] = (uint8_t)(i * 7 + i / 251);
    size_t sent = 0, got = 0;
    bool x_closed = false, y_eof = false;
    for (int iter = 0; iter < 200000 && !y_eof; iter++) {
        if (sent < TOTAL) {
            ssize_t w = write(x[1], out + sent, TOTAL - sent > 50000 ? 50000 : TOTAL - sent);
            if (w > 0)
                sent += (size_t)w;
        } else if (!x_closed) {
            shutdown(x[1], SHUT_WR);
            x_closed = true;
        }
        pump(&a);
        wire_deliver(&wa, &b);
        pump(&b);
        wire_deliver(&wb, &a);
        ssize_t r = read(y[1], in + got, TOTAL - got > 0 ? TOTAL - got : 1);
        if (r > 0)
            got += (size_t)r;
        else if (r == 0)
            y_eof = true;
    }
    assert_true(y_eof);
    assert_int_equal(got, TOTAL);
    assert_memory_equal(in, out, TOTAL);
    assert_int_equal(wa.closes, 1);
    /* The other way, then both sides close: the streams go. */
    assert_int_equal(write(y[1], "pong", 4), 4);
    shutdown(y[1], SHUT_WR);
    char buf[8] = {0};
    ssize_t r = 0;
    for (int iter = 0; iter < 1000 && r <= 0; iter++) {
        pump(&b);
        wire_deliver(&wb, &a);
        pump(&a);
        wire_deliver(&wa, &b);
        r = read(x[1], buf, sizeof buf);
    }
    assert_int_equal(r, 4);
    assert_string_equal(buf, "pong");
    for (int iter = 0; iter < 100 && (a.n || b.n); iter++) {
        pump(&b);
        wire_deliver(&wb, &a);
        pump(&a);
        wire_deliver(&wa, &b);
    }
    assert_int_equal(a.n, 0);
    assert_int_equal(b.n, 0);
    close(x[1]);
    close(y[1]);
}

static void test_relay_closes_a_stream_whose_peer_ignores_the_window(void **state)
{
    (void)state;
    static fb_relay c;
    static relay_wire w;
    memset(&w, 0, sizeof w);
    fb_relay_init(&c, wire_send, &w);
    int x[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, x), 0);
    int small = 4096;
    setsockopt(x[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(x[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    assert_int_equal(fb_relay_add(&c, 9, x[0]), 0);
    static uint8_t chunk[FB_NET_CHUNK];
    fb_err err = {{0}};
    fb_msg_net m = {.type = FB_MSG_NET_DATA};
    /* Nobody reads x[1] and nothing is acknowledged: the fifth chunk is
     * beyond the 256 KiB window. */
    for (int i = 0; i < 6; i++) {
        fb_frame f;
        to_frame(fb_msg_encode_net(9, &m, &err), chunk, sizeof chunk, &f);
        fb_relay_frame(&c, &f);
        fb_frame_clear(&f);
    }
    assert_int_equal(w.closes, 1);
    assert_int_equal(c.n, 0); /* the stream is gone; later frames for it are ignored */
    for (size_t i = 0; i < w.n; i++)
        fb_frame_clear(&w.q[i]);
    fb_relay_close_all(&c);
    close(x[1]);
}

static void expect_exec_refused(const char *json, const char *fragment)
{
    json_error_t jerr;
    json_t *h = json_loads(json, 0, &jerr);
    assert_non_null(h);
    fb_frame f;
    to_frame(h, NULL, 0, &f);
    fb_msg_exec d;
    fb_err err = {{0}};
    assert_int_equal(fb_msg_decode_exec(&f, &d, &err), -1);
    if (!strstr(err.msg, fragment))
        fail_msg("\"%s\" lacks \"%s\"", err.msg, fragment);
    fb_frame_clear(&f);
}

static void test_exec_decoder_is_strict(void **state)
{
    (void)state;
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"extra\":1}",
                        "unknown field \"extra\"");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[],\"timeout_ms\":1}", "non-empty array");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"\"],\"timeout_ms\":1}", "is empty");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[1],\"timeout_ms\":1}", "not a string");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"]}", "missing field \"timeout_ms\"");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":0}", "must be positive");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":86400001}", "exceeds");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"cwd\":\"rel\"}",
                        "absolute");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"env\":{\"1A\":\"x\"}}",
                        "bad variable name");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"env\":{\"A=B\":\"x\"}}",
                        "bad variable name");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"env\":{\"A\":1}}",
                        "non-string");
    expect_exec_refused("{\"t\":\"exec\",\"id\":1,\"argv\":[\"x\"],\"timeout_ms\":1,\"env\":[]}",
                        "object of strings");
}

static void test_exec_encoder_refuses_what_cannot_travel(void **state)
{
    (void)state;
    fb_errc code;
    fb_err err = {{0}};
    const char *bad_utf8[] = {"echo", "\xc3", NULL};
    fb_msg_exec m = {.argv = bad_utf8, .argc = 2, .timeout_ms = 1};
    assert_null(fb_msg_encode_exec(1, &m, &code, &err));
    assert_int_equal(code, FB_E_BAD_REQUEST);
    /* One byte under and over the header cap, by the length of argv[1]. */
    static char big[FB_PROTO_MAX_HEADER + 10];
    const char *argv[] = {"echo", big, NULL};
    fb_msg_exec m2 = {.argv = argv, .argc = 2, .timeout_ms = 1};
    size_t overhead = strlen("{\"t\":\"exec\",\"id\":1,\"argv\":[\"echo\",\"\"],\"env\":{},"
                             "\"timeout_ms\":1,\"stdin\":false}");
    memset(big, 'a', FB_PROTO_MAX_HEADER - overhead);
    big[FB_PROTO_MAX_HEADER - overhead] = '\0';
    json_t *h = fb_msg_encode_exec(1, &m2, &code, &err);
    assert_non_null(h);
    assert_int_equal(code, FB_OK);
    json_decref(h);
    big[FB_PROTO_MAX_HEADER - overhead] = 'a';
    big[FB_PROTO_MAX_HEADER - overhead + 1] = '\0';
    assert_null(fb_msg_encode_exec(1, &m2, &code, &err));
    assert_int_equal(code, FB_E_TOO_LARGE);
    fb_env_var dup[] = {{"A", "1"}, {"A", "2"}};
    fb_msg_exec m3 = {.argv = argv, .argc = 1, .env = dup, .nenv = 2, .timeout_ms = 1};
    assert_null(fb_msg_encode_exec(1, &m3, &code, &err));
    assert_int_equal(code, FB_E_BAD_REQUEST);
}

static void test_exit_round_trip(void **state)
{
    (void)state;
    fb_err err = {{0}};
    fb_frame f;
    fb_msg_exit in = {.started = true, .code = 3, .truncated = true, .duration_ms = 12};
    to_frame(fb_msg_encode_exit(5, &in, &err), NULL, 0, &f);
    fb_msg_exit out;
    assert_int_equal(fb_msg_decode_exit(&f, &out, &err), 0);
    assert_true(out.started);
    assert_int_equal(out.code, 3);
    assert_int_equal(out.signal, 0);
    assert_true(out.truncated);
    assert_false(out.oom);
    assert_int_equal(out.duration_ms, 12);
    fb_frame_clear(&f);

    fb_msg_exit sig = {.started = true, .signal = 9, .oom = true};
    to_frame(fb_msg_encode_exit(5, &sig, &err), NULL, 0, &f);
    assert_int_equal(fb_msg_decode_exit(&f, &out, &err), 0);
    assert_int_equal(out.signal, 9);
    assert_true(out.oom);
    fb_frame_clear(&f);

    fb_msg_exit nf = {.started = false, .code = 127, .error = FB_E_NOT_FOUND, .message = "x: \xff"};
    to_frame(fb_msg_encode_exit(5, &nf, &err), NULL, 0, &f);
    assert_int_equal(fb_msg_decode_exit(&f, &out, &err), 0);
    assert_false(out.started);
    assert_int_equal(out.error, FB_E_NOT_FOUND);
    assert_string_equal(out.message, "x: \xef\xbf\xbd"); /* cleaned, not lost */
    fb_frame_clear(&f);

    json_error_t jerr;
    to_frame(json_loads("{\"t\":\"exit\",\"id\":5,\"code\":1,\"signal\":9}", 0, &jerr), NULL, 0, &f);
    assert_int_equal(fb_msg_decode_exit(&f, &out, &err), -1);
    assert_non_null(strstr(err.msg, "exactly one"));
    fb_frame_clear(&f);
    to_frame(json_loads("{\"t\":\"exit\",\"id\":5,\"code\":null,\"signal\":null}", 0, &jerr), NULL, 0, &f);
    assert_int_equal(fb_msg_decode_exit(&f, &out, &err), -1);
    fb_frame_clear(&f);
}

static void test_file_messages(void **state)
{
    (void)state;
    fb_err err = {{0}};
    fb_frame f;
    fb_msg_file put = {.type = FB_MSG_FILE_PUT, .path = "/workspace/a", .offset = 9, .mode = 0755};
    to_frame(fb_msg_encode_file(3, &put, &err), "xy", 2, &f);
    fb_msg_file d;
    assert_int_equal(fb_msg_decode_file(&f, &d, &err), 0);
    assert_int_equal(d.type, FB_MSG_FILE_PUT);
    assert_string_equal(d.path, "/workspace/a");
    assert_int_equal(d.offset, 9);
    assert_int_equal(d.mode, 0755);
    fb_frame_clear(&f);
    /* Defaults, and a payload where none belongs. */
    to_frame(fb_hdr_new("file_mkdir", 3), NULL, 0, &f);
    assert_int_equal(fb_msg_decode_file(&f, &d, &err), -1);
    assert_non_null(strstr(err.msg, "missing field \"path\""));
    fb_frame_clear(&f);
    fb_msg_file get = {.type = FB_MSG_FILE_GET, .path = "b", .length = FB_MAX_FILE_CHUNK};
    to_frame(fb_msg_encode_file(3, &get, &err), "z", 1, &f);
    assert_int_equal(fb_msg_decode_file(&f, &d, &err), -1);
    assert_non_null(strstr(err.msg, "unexpected payload"));
    fb_frame_clear(&f);
    fb_msg_file not_file = {.type = FB_MSG_EXEC, .path = "x"};
    assert_null(fb_msg_encode_file(3, &not_file, &err));
}

static void test_error_and_signal_messages(void **state)
{
    (void)state;
    fb_err err = {{0}};
    fb_frame f;
    to_frame(fb_msg_encode_error(4, &(fb_msg_error){.code = FB_E_NO_SPACE, .message = "full"}, &err),
             NULL, 0, &f);
    fb_msg_error e;
    assert_int_equal(fb_msg_decode_error(&f, &e, &err), 0);
    assert_int_equal(e.code, FB_E_NO_SPACE);
    assert_string_equal(e.message, "full");
    fb_frame_clear(&f);
    assert_null(fb_msg_encode_signal(4, &(fb_msg_signal){.signal = SIGSEGV}, &err));
    to_frame(fb_msg_encode_signal(4, &(fb_msg_signal){.signal = SIGTERM}, &err), NULL, 0, &f);
    fb_msg_signal s;
    assert_int_equal(fb_msg_decode_signal(&f, &s, &err), 0);
    assert_int_equal(s.signal, SIGTERM);
    fb_frame_clear(&f);
    json_t *h = fb_hdr_new("signal", 4);
    json_object_set_new(h, "signal", json_integer(SIGSEGV));
    to_frame(h, NULL, 0, &f);
    assert_int_equal(fb_msg_decode_signal(&f, &s, &err), -1);
    fb_frame_clear(&f);
    h = fb_hdr_new("stdin_ack", 4);
    json_object_set_new(h, "bytes", json_integer(FB_STDIN_WINDOW + 1));
    to_frame(h, NULL, 0, &f);
    fb_msg_stdin_ack ack;
    assert_int_equal(fb_msg_decode_stdin_ack(&f, &ack, &err), -1);
    fb_frame_clear(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_no_payload),
        cmocka_unit_test(test_roundtrip_payload),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_two_frames_one_buffer),
        cmocka_unit_test(test_header_length_zero),
        cmocka_unit_test(test_header_length_over_cap_fails_on_prefix),
        cmocka_unit_test(test_header_length_at_cap_waits_for_body),
        cmocka_unit_test(test_payload_length_over_cap),
        cmocka_unit_test(test_header_not_json),
        cmocka_unit_test(test_header_not_object),
        cmocka_unit_test(test_header_type),
        cmocka_unit_test(test_header_id),
        cmocka_unit_test(test_header_invalid_utf8),
        cmocka_unit_test(test_header_nul_in_string),
        cmocka_unit_test(test_header_duplicate_keys),
        cmocka_unit_test(test_failed_decoder_stays_failed),
        cmocka_unit_test(test_bad_prefix_after_good_frame),
        cmocka_unit_test(test_encode_refuses_oversized),
        cmocka_unit_test(test_maximal_frame_decodes),
        cmocka_unit_test(test_room_never_exceeds_max_frame),
        cmocka_unit_test(test_chan_send_recv),
        cmocka_unit_test(test_chan_one_mib_payload),
        cmocka_unit_test(test_chan_recv_timeout),
        cmocka_unit_test(test_chan_recv_eof),
        cmocka_unit_test(test_chan_recv_protocol_error),
        cmocka_unit_test(test_chan_queue_cap),
        cmocka_unit_test(test_hdr_str),
        cmocka_unit_test(test_hdr_u64),
        cmocka_unit_test(test_hdr_bool),
        cmocka_unit_test(test_hdr_only),
        cmocka_unit_test(test_hdr_new),
        cmocka_unit_test(test_errc_names_round_trip),
        cmocka_unit_test(test_exec_round_trip),
        cmocka_unit_test(test_hello_net_flag),
        cmocka_unit_test(test_hello_seed_and_time),
        cmocka_unit_test(test_relay_carries_bytes_both_ways_and_half_closes),
        cmocka_unit_test(test_relay_closes_a_stream_whose_peer_ignores_the_window),
        cmocka_unit_test(test_exec_decoder_is_strict),
        cmocka_unit_test(test_exec_encoder_refuses_what_cannot_travel),
        cmocka_unit_test(test_exit_round_trip),
        cmocka_unit_test(test_file_messages),
        cmocka_unit_test(test_error_and_signal_messages),
    };
    return cmocka_run_group_tests_name("proto", tests, NULL, NULL);
}

/*
 * fuzz_proto.c - libFuzzer target for everything that reads bytes from the
 * other side of a sandbox channel: the frame decoder (src/proto/proto.c),
 * every typed message decoder (src/proto/msg.c), and the UTF-8 cleaner
 * (src/common/utf8.c) that turns command output into JSON strings.
 *
 *   make fuzz-proto          (bounded: -max_total_time=30)
 *
 * The first input byte picks the feeding pattern (chunk size), so that
 * frames split at every boundary get exercised; each decoded frame is put
 * through all decoders whatever its type, and what they return is checked
 * against the limits they promise.  The cleaner is checked for its one
 * property: chunked cleaning equals one-shot cleaning, and the result is
 * valid UTF-8 without NUL.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "proto/msg.h"
#include "proto/proto.h"

#define CHECK(c)                                                                              \
    do {                                                                                      \
        if (!(c))                                                                             \
            abort();                                                                          \
    } while (0)

static void decode_all(const fb_frame *f)
{
    fb_err err;
    CHECK(fb_msg_type_of(f) < FB_MSG_TYPE_COUNT);
    fb_msg_hello hello;
    if (fb_msg_decode_hello(f, &hello, &err) == 0)
        CHECK(hello.max_output <= FB_MAX_OUTPUT_CAP && hello.nproc >= 8);
    fb_msg_ready ready;
    if (fb_msg_decode_ready(f, &ready, &err) == 0)
        CHECK(ready.agent && ready.kernel && ready.mode);
    fb_msg_exec ex;
    if (fb_msg_decode_exec(f, &ex, &err) == 0) {
        CHECK(ex.argc >= 1 && ex.argc <= FB_MAX_ARGV && ex.argv[ex.argc] == NULL);
        CHECK(ex.nenv <= FB_MAX_ENV && ex.timeout_ms >= 1 && ex.timeout_ms <= FB_MAX_TIMEOUT_MS);
        for (size_t i = 0; i < ex.nenv; i++)
            CHECK(ex.env[i].key[0] != '\0' && strlen(ex.env[i].key) <= FB_MAX_ENV_NAME);
        /* What was decoded encodes again (or is refused as too large). */
        fb_errc code;
        json_t *h = fb_msg_encode_exec(f->id, &ex, &code, &err);
        CHECK(h || code == FB_E_TOO_LARGE || code == FB_E_BAD_REQUEST);
        json_decref(h);
        fb_msg_exec_free(&ex);
    }
    fb_msg_stdin in;
    (void)fb_msg_decode_stdin(f, &in, &err);
    fb_msg_stdin_ack ack;
    if (fb_msg_decode_stdin_ack(f, &ack, &err) == 0)
        CHECK(ack.bytes <= FB_STDIN_WINDOW);
    fb_msg_signal sig;
    if (fb_msg_decode_signal(f, &sig, &err) == 0)
        CHECK(fb_msg_signal_allowed(sig.signal));
    fb_msg_file file;
    if (fb_msg_decode_file(f, &file, &err) == 0)
        CHECK(fb_msg_is_file_request(file.type) && strlen(file.path) <= FB_MAX_PATH &&
              file.length <= FB_MAX_FILE_CHUNK && file.mode <= 0777);
    fb_msg_exit ex2;
    if (fb_msg_decode_exit(f, &ex2, &err) == 0)
        CHECK(ex2.message && (ex2.started ? ex2.error == FB_OK : ex2.error != FB_OK));
    fb_msg_error er;
    if (fb_msg_decode_error(f, &er, &err) == 0)
        CHECK(er.message && er.code < FB_ERRC_COUNT);
    const char *msg;
    (void)fb_msg_decode_fatal(f, &msg, &err);
    fb_msg_file_ok ok;
    for (int t = FB_MSG_FILE_PUT; t <= FB_MSG_STATS; t++)
        (void)fb_msg_decode_file_ok(f, (fb_msg_type)t, &ok, &err);
    (void)fb_msg_decode_simple(f, &err);
}

static void fuzz_frames(const uint8_t *data, size_t size)
{
    size_t chunk = (size_t)data[0] + 1;
    data++;
    size--;
    fb_decoder d;
    fb_decoder_init(&d);
    fb_err err;
    size_t off = 0;
    bool failed = false;
    while (off < size && !failed) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (n > fb_decoder_room(&d))
            n = fb_decoder_room(&d);
        if (n == 0 || fb_decoder_feed(&d, data + off, n, &err) < 0)
            break;
        off += n;
        CHECK(d.len <= FB_PROTO_MAX_FRAME);
        for (;;) {
            fb_frame f;
            int r = fb_decoder_next(&d, &f, &err);
            if (r < 0)
                failed = true;
            if (r <= 0)
                break;
            CHECK(f.hdr && f.type && f.id <= FB_PROTO_MAX_ID && f.payload_len <= FB_PROTO_MAX_PAYLOAD);
            decode_all(&f);
            fb_frame_clear(&f);
        }
    }
    fb_decoder_free(&d);
}

static void fuzz_utf8(const uint8_t *data, size_t size)
{
    size_t one_len;
    char *one = fb_utf8_clean(data, size, &one_len);
    CHECK(one);
    CHECK(fb_utf8_valid(one, one_len, false));
    char *chunked = malloc(fb_utf8_clean_bound(size) + 3);
    CHECK(chunked);
    fb_utf8_cleaner c;
    fb_utf8_cleaner_init(&c);
    size_t k = 0, step = size ? (size_t)data[0] % 7 + 1 : 1;
    for (size_t off = 0; off < size; off += step)
        k += fb_utf8_clean_chunk(&c, data + off, size - off < step ? size - off : step, chunked + k);
    k += fb_utf8_clean_finish(&c, chunked + k);
    CHECK(k == one_len && memcmp(one, chunked, k) == 0);
    /* Valid input (no NUL) comes out unchanged, anything else changed. */
    bool same = one_len == size && memcmp(one, data, size) == 0;
    CHECK(fb_utf8_valid(data, size, false) == same);
    free(one);
    free(chunked);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    fuzz_frames(data, size);
    fuzz_utf8(data, size);
    return 0;
}

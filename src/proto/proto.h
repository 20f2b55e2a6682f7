/*
 * proto.h - the host <-> guest agent wire protocol (docs/protocol.md).
 *
 * One framed, multiplexed protocol over any byte stream: a virtio-serial
 * port for the vm backend, a socketpair for the jail backend.  A frame is
 *
 *     u32 big-endian  header length   (1 .. FB_PROTO_MAX_HEADER)
 *     u32 big-endian  payload length  (0 .. FB_PROTO_MAX_PAYLOAD)
 *     header          a JSON object: {"t": type, "id": request id, ...}
 *     payload         raw bytes (file data, output chunks, stdin)
 *
 * Both peers share this code, so both validate the same way: a length over
 * its cap, a header that is not a JSON object, invalid UTF-8, a NUL inside a
 * string, a missing or unknown type or a bad id are protocol errors.  A
 * protocol error is fatal for the channel (and so for that one sandbox); the
 * decoder never grows a buffer past the caps, whatever the peer sends.
 *
 * fb_chan adds what a poll loop needs on top: a decoder for what arrives and
 * a bounded queue for what is sent, written out with non-blocking writes so
 * that neither side can deadlock the other by not reading.
 *
 * The messages themselves (a struct per type, their fields and limits) are
 * in msg.h, the typed error codes in errors.h.
 */
#ifndef FB_PROTO_H
#define FB_PROTO_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define FB_PROTO_VERSION 1
#define FB_PROTO_PREFIX 8u
#define FB_PROTO_MAX_HEADER (64u * 1024u)
#define FB_PROTO_MAX_PAYLOAD (1024u * 1024u)
#define FB_PROTO_MAX_FRAME (FB_PROTO_PREFIX + FB_PROTO_MAX_HEADER + FB_PROTO_MAX_PAYLOAD)
/* Request ids are JSON integers; keep them exactly representable anywhere. */
#define FB_PROTO_MAX_ID ((1ull << 53) - 1)

/* A decoded frame.  hdr is owned (json_decref it via fb_frame_clear);
 * payload points into an owned buffer. */
typedef struct fb_frame {
    json_t *hdr;
    const char *type; /* borrowed from hdr */
    uint64_t id;
    uint8_t *payload;
    size_t payload_len;
} fb_frame;

void fb_frame_clear(fb_frame *f);

/* Frees a string jansson made (json_dumps) with jansson's allocator,
 * which the agent replaces (src/agent/jheap.c); free() elsewhere. */
void fb_json_text_free(char *text);

/* Serialises a frame into a newly allocated buffer. */
int fb_frame_encode(const json_t *hdr, const void *payload, size_t payload_len,
                    uint8_t **out, size_t *out_len, fb_err *err);

/* Streaming decoder.  Feed bytes as they arrive; take frames out. */
typedef struct fb_decoder {
    uint8_t *buf;
    size_t len;
    size_t cap;
    bool failed;
} fb_decoder;

void fb_decoder_init(fb_decoder *d);
void fb_decoder_free(fb_decoder *d);
/* Appends bytes.  Fails (and poisons the decoder) if they could not belong
 * to a valid frame; never buffers more than FB_PROTO_MAX_FRAME. */
int fb_decoder_feed(fb_decoder *d, const void *data, size_t n, fb_err *err);
/* 1: a frame was taken; 0: need more bytes; -1: protocol error. */
int fb_decoder_next(fb_decoder *d, fb_frame *out, fb_err *err);
/* How many bytes the decoder can usefully accept now. */
size_t fb_decoder_room(const fb_decoder *d);

/* A channel: one fd, its decoder and its outgoing queue. */
typedef struct fb_chan {
    int fd;
    fb_decoder dec;
    uint8_t *out;
    size_t out_len;
    size_t out_off;
    size_t out_cap;
    bool eof;
} fb_chan;

void fb_chan_init(fb_chan *c, int fd);
void fb_chan_free(fb_chan *c); /* does not close fd */
/* Queues a frame.  Fails if the queue would exceed max_queued bytes. */
int fb_chan_send(fb_chan *c, const json_t *hdr, const void *payload, size_t len, fb_err *err);
/* Writes what it can without blocking: 0 ok (maybe partial), -1 on error. */
int fb_chan_flush(fb_chan *c, fb_err *err);
/* Blocks (poll) until everything queued is written or timeout_ms passes. */
int fb_chan_flush_all(fb_chan *c, int timeout_ms, fb_err *err);
size_t fb_chan_queued(const fb_chan *c);
/* Reads what is available (non-blocking fd) into the decoder.  Returns
 * bytes read, 0 on EOF (c->eof set), -1 on error; EAGAIN gives -2. */
long fb_chan_read(fb_chan *c, fb_err *err);
/* Blocking receive of one frame with a timeout (ms, -1 = none). */
int fb_chan_recv(fb_chan *c, fb_frame *out, int timeout_ms, fb_err *err);

/* Queue cap for fb_chan_send: above it the sender must stop producing. */
#define FB_CHAN_MAX_QUEUED (8u * 1024u * 1024u)

/* ---- header field helpers: strict, with messages naming the field ------ */

int fb_hdr_str(const json_t *hdr, const char *key, bool required, size_t max_len,
               const char **out, fb_err *err);
int fb_hdr_u64(const json_t *hdr, const char *key, bool required, uint64_t max,
               uint64_t *out, fb_err *err);
int fb_hdr_bool(const json_t *hdr, const char *key, bool *out, fb_err *err);
/* Fails if hdr has a key not in the NULL-terminated list. */
int fb_hdr_only(const json_t *hdr, const char *const *allowed, fb_err *err);

/* Builds {"t": type, "id": id} to which callers add fields. */
json_t *fb_hdr_new(const char *type, uint64_t id);

#endif

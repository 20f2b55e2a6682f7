/*
 * transfer.c - copying files into and out of a sandbox (sandbox.h).
 *
 * Both directions go chunk by chunk, one request per chunk of at most
 * 1 MiB (get is pulled by offset, put is pushed at the file's current
 * size), so neither side ever holds more than a chunk.  Each chunk is an
 * ordinary request through the supervisor: transfers run beside execs and
 * beside each other, and a sandbox that dies or is killed fails them with
 * its typed reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sandbox/supervisor.h"

#define FILE_CHUNK (256u * 1024u)
#define REQUEST_TIMEOUT_MS 30000

/* One file request: its reply ("ok") decoded into *ok. */
static fb_errc file_request(fb_sandbox *sb, const fb_msg_file *m, const void *payload, size_t len,
                            fb_request *rq, fb_msg_file_ok *ok, fb_err *err)
{
    memset(rq, 0, sizeof *rq);
    pthread_mutex_lock(&sb->mu);
    fb_errc code = fb_sup_begin_locked(sb, true, &rq->id, err);
    pthread_mutex_unlock(&sb->mu);
    if (code != FB_OK)
        return code;
    json_t *h = fb_msg_encode_file(rq->id, m, err);
    if (!h)
        return FB_E_BAD_REQUEST;
    code = fb_sup_request(sb, rq, h, payload, len, REQUEST_TIMEOUT_MS, err);
    if (code != FB_OK)
        return code;
    fb_err why = {{0}};
    if (fb_msg_decode_file_ok(&rq->reply, m->type, ok, &why) < 0 ||
        (m->type == FB_MSG_FILE_GET && rq->reply.payload_len > m->length)) {
        fb_frame_clear(&rq->reply);
        pthread_mutex_lock(&sb->mu);
        fb_sup_die_locked(sb, FB_E_PROTOCOL, "sandbox %s sent a malformed reply: %s", sb->id,
                          why.msg[0] ? why.msg : "more bytes than asked for");
        pthread_mutex_unlock(&sb->mu);
        fb_fail(err, "sandbox %s sent a malformed reply", sb->id);
        return FB_E_PROTOCOL;
    }
    return FB_OK;
}

fb_errc fb_file_put(fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err)
{
    if (sb->remote)
        return sb->remote->put(sb->remote_ctx, sb, remote, fd, mode, err);
    cleanup_free uint8_t *buf = malloc(FILE_CHUNK);
    if (!buf) {
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    uint64_t offset = 0;
    for (;;) {
        size_t got = 0;
        if (fb_read_up_to(fd, buf, FILE_CHUNK, &got) < 0) {
            fb_fail_errno(err, "cannot read the local file for %s", remote);
            return FB_E_IO_ERROR;
        }
        if (got == 0 && offset > 0)
            return FB_OK;
        fb_msg_file m = {.type = FB_MSG_FILE_PUT, .path = remote, .offset = offset, .mode = mode & 0777};
        fb_request rq;
        fb_msg_file_ok ok;
        fb_errc code = file_request(sb, &m, buf, got, &rq, &ok, err);
        if (code != FB_OK) {
            fb_fail_prefix(err, "cannot put %s", remote);
            return code;
        }
        fb_frame_clear(&rq.reply);
        offset += got;
        if (got < FILE_CHUNK)
            return FB_OK;
    }
}

fb_errc fb_file_get(fb_sandbox *sb, const char *remote, int fd, uint64_t max_bytes, fb_err *err)
{
    if (sb->remote)
        return sb->remote->get(sb->remote_ctx, sb, remote, fd, max_bytes, err);
    uint64_t offset = 0;
    for (;;) {
        fb_msg_file m = {.type = FB_MSG_FILE_GET, .path = remote, .offset = offset,
                         .length = FB_MAX_FILE_CHUNK};
        fb_request rq;
        fb_msg_file_ok ok;
        fb_errc code = file_request(sb, &m, NULL, 0, &rq, &ok, err);
        if (code != FB_OK) {
            fb_fail_prefix(err, "cannot get %s", remote);
            return code;
        }
        if (ok.size > max_bytes || offset + rq.reply.payload_len > max_bytes) {
            fb_frame_clear(&rq.reply);
            fb_fail(err, "cannot get %s: file is larger than the %llu-byte limit", remote,
                    (unsigned long long)max_bytes);
            return FB_E_TOO_LARGE;
        }
        if (rq.reply.payload_len && fb_write_all(fd, rq.reply.payload, rq.reply.payload_len) < 0) {
            fb_frame_clear(&rq.reply);
            fb_fail_errno(err, "cannot write the local copy of %s", remote);
            return FB_E_IO_ERROR;
        }
        offset += rq.reply.payload_len;
        bool eof = ok.eof || rq.reply.payload_len == 0;
        fb_frame_clear(&rq.reply);
        if (eof)
            return FB_OK;
    }
}

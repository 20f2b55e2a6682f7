/*
 * h_files.c - PUT and GET /v1/sandboxes/{id}/files?path=... (gw.h).
 *
 * An upload is streamed: the sandbox and the permission are settled from
 * the headers (server.c), the transfer starts before the body is read,
 * and each piece of body goes to the sandbox as it arrives, so memory
 * stays bounded whatever the size (finding 8 of issue 6).  A download is
 * staged in a memfd (bounded by limits.max_file_bytes) and sent from it.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/gw.h"

typedef struct upload_state {
    fb_upload *up;
    bool failed;
    fb_core_err err;
} upload_state;

static enum MHD_Result put_begin(gw_req *r, bool *answered)
{
    upload_state *st = calloc(1, sizeof *st);
    if (!st) {
        *answered = true;
        return gw_send_error(r, 503, "unavailable", "out of memory");
    }
    fb_core_err err = {0};
    if (fb_core_upload_begin(r->g->core, &r->caller, r->ref, gw_query(r, "path"), &st->up, &err) < 0) {
        free(st);
        *answered = true;
        return gw_send_core_error(r, &err);
    }
    /* The upload holds its own reference to the sandbox. */
    fb_core_sandbox_put(r->g->core, r->ref);
    r->ref = NULL;
    r->stream_state = st;
    return MHD_YES;
}

static bool put_chunk(gw_req *r, const char *data, size_t len)
{
    upload_state *st = r->stream_state;
    if (st->failed)
        return false;
    if (fb_core_upload_write(st->up, data, len, &st->err) < 0)
        st->failed = true;
    return !st->failed;
}

static void put_abort(gw_req *r)
{
    upload_state *st = r->stream_state;
    if (!st)
        return;
    fb_core_upload_abort(st->up);
    free(st);
    r->stream_state = NULL;
}

static enum MHD_Result put_end(gw_req *r)
{
    upload_state *st = r->stream_state;
    r->stream_state = NULL;
    uint64_t size = 0;
    fb_core_err err = {0};
    int rc = fb_core_upload_finish(st->up, &size, &err);
    bool failed = st->failed;
    free(st);
    if (rc < 0)
        return gw_send_core_error(r, &err); /* the sandbox's reason, if it refused */
    if (failed)
        return gw_send_error(r, 400, "file_error", "the sandbox stopped taking the file");
    return gw_send_json(r, 201, json_pack("{s:s, s:I}", "path", gw_query(r, "path"), "size", (json_int_t)size));
}

static const gw_stream_ops put_ops = {
    .begin = put_begin,
    .chunk = put_chunk,
    .end = put_end,
    .abort = put_abort,
};

static enum MHD_Result files_get(gw_req *r)
{
    int fd = memfd_create("fb-file", MFD_CLOEXEC);
    if (fd < 0)
        return gw_send_error(r, 503, "unavailable", "cannot stage the file");
    fb_core_err err = {0};
    if (fb_core_file_get(r->g->core, &r->caller, r->ref, gw_query(r, "path"), fd, &err) < 0) {
        close(fd);
        return gw_send_core_error(r, &err);
    }
    off_t size = lseek(fd, 0, SEEK_END);
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64((uint64_t)size, fd, 0);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return gw_queue(r, 200, resp, "application/octet-stream");
}

const gw_route gw_routes_files[] = {
    {.def = {"PUT", "/v1/sandboxes/{id}/files"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_EXEC,
     .body = GW_BODY_STREAM, .stream = &put_ops},
    {.def = {"GET", "/v1/sandboxes/{id}/files"}, .resolve = GW_RES_SANDBOX, .perm = FB_PERM_SANDBOXES_EXEC,
     .fn = files_get},
    {.def = {NULL, NULL}},
};

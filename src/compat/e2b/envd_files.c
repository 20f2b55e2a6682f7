/*
 * envd_files.c - envd's GET and POST /files (internal.h).
 *
 * POST takes the file either as application/octet-stream (the path in
 * ?path=) or as multipart/form-data with one or more "file" parts (each
 * part's file name is its path; ?path= for a part without one).  Either
 * way the bytes stream into the sandbox as they arrive (fb_core_upload_*),
 * after the parent directory is made (mkdir -p, argv only), so memory
 * stays bounded whatever the size.  The answer is E2B's list of entries
 * [{name, type: "file", path}].  GET stages the file in a memfd (bounded
 * by limits.max_file_bytes) and sends it.  A missing file is a 404.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat/e2b/internal.h"

typedef struct upload {
    fb_sb_ref *ref;             /* held for the whole body: parts begin as they come */
    struct MHD_PostProcessor *pp;
    fb_upload *up;              /* the file being written */
    char path[4096];
    char part_key[64], part_name[4096];
    json_t *done;               /* entries written */
    bool failed;
    fb_core_err err;
} upload;

bool e2b_files_streams(const e2b_req *r)
{
    return r->api == E2B_API_ENVD && strcmp(r->method, "POST") == 0 && strcmp(r->url, "/files") == 0;
}

static void fail(upload *u, const fb_core_err *err)
{
    if (!u->failed)
        u->err = *err;
    u->failed = true;
}

/* Ends the file in progress and records its entry. */
static void close_file(upload *u)
{
    if (!u->up)
        return;
    uint64_t size = 0;
    fb_core_err err = {0};
    int rc = fb_core_upload_finish(u->up, &size, &err);
    u->up = NULL;
    if (rc < 0) {
        fail(u, &err);
        return;
    }
    const char *slash = strrchr(u->path, '/');
    json_array_append_new(u->done, json_pack("{s:s, s:s, s:s}", "name", slash ? slash + 1 : u->path, "type", "file",
                                             "path", u->path));
}

/* Starts a file at E2B path `path`. */
static void open_file(e2b_req *r, upload *u, const char *path)
{
    close_file(u);
    fb_core_err err = {0};
    if (u->failed)
        return;
    if (!e2b_path(path, u->path, sizeof u->path) || !path || !path[0]) {
        fb_core_fail(&err, FB_CORE_BAD_REQUEST, "a file needs a path (?path= or the part's file name)");
        fail(u, &err);
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", u->path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        const char *argv[] = {"mkdir", "-p", "--", dir, NULL};
        int code = e2b_run(r, u->ref, argv, NULL, NULL, &err);
        if (code != 0) {
            if (code > 0)
                fb_core_fail(&err, FB_CORE_FILE_ERROR, "cannot make the directory %s", dir);
            fail(u, &err);
            return;
        }
    }
    if (fb_core_upload_begin(r->s->sh.core, &r->caller, u->ref, u->path, &u->up, &err) < 0)
        fail(u, &err);
}

static void write_file(upload *u, const char *data, size_t len)
{
    fb_core_err err = {0};
    if (u->up && !u->failed && len && fb_core_upload_write(u->up, data, len, &err) < 0)
        fail(u, &err);
}

static enum MHD_Result on_part(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                               const char *content_type, const char *transfer_encoding, const char *data,
                               uint64_t off, size_t size)
{
    (void)kind;
    (void)content_type;
    (void)transfer_encoding;
    e2b_req *r = cls;
    upload *u = r->upload;
    if (!key || strcmp(key, "file") != 0)
        return MHD_YES; /* other fields are not E2B's */
    const char *name = filename && filename[0] ? filename : e2b_query(r, "path");
    if (off == 0 && (!u->up || strcmp(u->part_name, name ? name : "") != 0 || strcmp(u->part_key, key) != 0)) {
        snprintf(u->part_key, sizeof u->part_key, "%s", key);
        snprintf(u->part_name, sizeof u->part_name, "%s", name ? name : "");
        open_file(r, u, name);
    }
    write_file(u, data, size);
    return u->failed ? MHD_NO : MHD_YES;
}

enum MHD_Result e2b_files_begin(e2b_req *r, bool *answered)
{
    const char *ct = e2b_header(r, "Content-Type");
    bool multipart = ct && strncasecmp(ct, "multipart/form-data", 19) == 0;
    bool octets = ct && strncasecmp(ct, "application/octet-stream", 24) == 0;
    *answered = true;
    if (!multipart && !octets)
        return e2b_send_error(r, 415, "POST /files takes multipart/form-data or application/octet-stream");
    if (e2b_header(r, "Content-Encoding"))
        return e2b_send_error(r, 415, "compressed uploads are not supported on this server");
    upload *u = calloc(1, sizeof *u);
    if (!u || !(u->done = json_array())) {
        free(u);
        return e2b_send_error(r, 503, "out of memory");
    }
    fb_core_err err = {0};
    if (fb_core_sandbox_open(r->s->sh.core, &r->caller, e2b_box_id(r->box), FB_PERM_SANDBOXES_EXEC, &u->ref, &err) <
        0) {
        json_decref(u->done);
        free(u);
        return err.code == FB_CORE_NOT_FOUND ? e2b_send_error(r, 404, "the sandbox is not running")
                                             : e2b_send_core_error(r, &err);
    }
    r->upload = u;
    if (multipart) {
        u->pp = MHD_create_post_processor(r->conn, 64 * 1024, on_part, r);
        if (!u->pp) {
            e2b_files_abort(r);
            return e2b_send_error(r, 400, "the multipart body has no boundary");
        }
    } else {
        open_file(r, u, e2b_query(r, "path"));
    }
    *answered = false;
    return MHD_YES;
}

void e2b_files_chunk(e2b_req *r, const char *data, size_t len)
{
    upload *u = r->upload;
    if (u->failed)
        return;
    if (u->pp) {
        if (MHD_post_process(u->pp, data, len) != MHD_YES && !u->failed) {
            fb_core_err err;
            fb_core_fail(&err, FB_CORE_BAD_REQUEST, "the multipart body is malformed");
            fail(u, &err);
        }
    } else {
        write_file(u, data, len);
    }
}

void e2b_files_abort(e2b_req *r)
{
    upload *u = r->upload;
    if (!u)
        return;
    r->upload = NULL;
    if (u->pp)
        MHD_destroy_post_processor(u->pp);
    if (u->up)
        fb_core_upload_abort(u->up);
    fb_core_sandbox_put(r->s->sh.core, u->ref);
    json_decref(u->done);
    free(u);
}

enum MHD_Result e2b_files_end(e2b_req *r)
{
    upload *u = r->upload;
    if (u->pp) {
        MHD_destroy_post_processor(u->pp);
        u->pp = NULL;
    }
    close_file(u);
    enum MHD_Result rc;
    if (u->failed)
        rc = u->err.code == FB_CORE_NOT_FOUND ? e2b_send_error(r, 404, u->err.msg) : e2b_send_core_error(r, &u->err);
    else if (json_array_size(u->done) == 0)
        rc = e2b_send_error(r, 400, "the body holds no file");
    else
        rc = e2b_send_json(r, 200, json_incref(u->done));
    e2b_files_abort(r);
    return rc;
}

enum MHD_Result e2b_files_get(e2b_req *r, fb_sb_ref *ref)
{
    char path[4096];
    if (!e2b_path(e2b_query(r, "path"), path, sizeof path))
        return e2b_send_error(r, 400, "the path is too long");
    int fd = memfd_create("fb-e2b-file", MFD_CLOEXEC);
    if (fd < 0)
        return e2b_send_error(r, 503, "cannot stage the file");
    fb_core_err err = {0};
    if (fb_core_file_get(r->s->sh.core, &r->caller, ref, path, fd, &err) < 0) {
        close(fd);
        return e2b_send_core_error(r, &err);
    }
    off_t size = lseek(fd, 0, SEEK_END);
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64((uint64_t)size, fd, 0);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    return e2b_queue(r, 200, resp, "application/octet-stream");
}

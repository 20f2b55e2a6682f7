/*
 * files.c - the file service: uploads streamed into a sandbox, downloads
 * out of it (core.h).
 *
 * An upload is a pipe and a thread: the thread feeds the pipe's read end
 * to the sandbox (fb_file_put reads it to EOF, a chunk at a time) while
 * the adapter writes the body into the write end as it arrives.  Memory
 * stays bounded whatever the file's size: a pipe's buffer and one chunk
 * (finding 8 of issue 6: bodies used to be buffered whole).  A body that
 * stops short is reported as a failure even though the sandbox saw an
 * EOF; what was written so far stays in the sandbox, as with any
 * interrupted copy.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

struct fb_upload {
    fb_core *c;
    fb_caller caller;
    fb_sb_ref *ref;          /* held for the transfer */
    char path[4097];
    int wfd;                 /* the adapter writes here */
    int rfd;                 /* the sandbox reads here */
    pthread_t thread;
    uint64_t size;
    fb_errc code;
    fb_err ferr;
};

static int check_ref(const fb_sb_ref *ref, fb_core_err *err)
{
    if (!(ref->perm & FB_PERM_SANDBOXES_EXEC))
        return fb_core_fail(err, FB_CORE_INTERNAL, "internal: file transfer with a reference not opened for it");
    return 0;
}

static int check_path(const char *path, fb_core_err *err)
{
    if (!path || !path[0] || strlen(path) > 4096)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "the \"path\" query parameter is required");
    json_t *s = json_string(path); /* jansson's own UTF-8 check */
    if (!s)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"path\" is not valid UTF-8");
    json_decref(s);
    return 0;
}

static fb_errc sandbox_gone(fb_err *err)
{
    fb_fail(err, "the sandbox is gone");
    return FB_E_SANDBOX_ENDED;
}

/* What a transfer's typed outcome means to the caller: a missing file and
 * one over the size limit have their own codes; anything else the sandbox
 * said about the file is a file error. */
static fb_core_code file_error_code(fb_errc code)
{
    switch (code) {
    case FB_E_NOT_FOUND:
        return FB_CORE_NOT_FOUND;
    case FB_E_TOO_LARGE:
        return FB_CORE_TOO_LARGE;
    default:
        return FB_CORE_FILE_ERROR;
    }
}

static void *upload_main(void *arg)
{
    fb_upload *u = arg;
    core_sandbox *s = u->ref->s;
    /* Execs and other transfers may use the sandbox meanwhile. */
    u->code = s->sb ? fb_file_put(s->sb, u->path, u->rfd, 0644, &u->ferr) : sandbox_gone(&u->ferr);
    /* Whatever is left unread is refused: the writer gets EPIPE. */
    close(u->rfd);
    u->rfd = -1;
    return NULL;
}

int fb_core_upload_begin(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *path, fb_upload **out,
                         fb_core_err *err)
{
    if (check_ref(ref, err) < 0 || check_path(path, err) < 0)
        return -1;
    fb_upload *u = calloc(1, sizeof *u);
    if (!u)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        free(u);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "cannot stage the file");
    }
    u->c = c;
    u->caller = *caller;
    u->rfd = p[0];
    u->wfd = p[1];
    snprintf(u->path, sizeof u->path, "%s", path);
    /* The upload holds its own reference for as long as it runs. */
    core_sandbox *s = core_registry_get(&c->reg, ref->s->id);
    u->ref = s == ref->s ? malloc(sizeof *u->ref) : NULL;
    if (!u->ref) {
        if (s)
            core_registry_put(c, s);
        close(p[0]);
        close(p[1]);
        free(u);
        return fb_core_fail(err, s ? FB_CORE_UNAVAILABLE : FB_CORE_NOT_FOUND, s ? "out of memory" : "no such resource");
    }
    *u->ref = (fb_sb_ref){.s = s, .perm = ref->perm};
    if (pthread_create(&u->thread, NULL, upload_main, u) != 0) {
        fb_core_sandbox_put(c, u->ref);
        close(p[0]);
        close(p[1]);
        free(u);
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "cannot start the transfer");
    }
    *out = u;
    return 0;
}

int fb_core_upload_write(fb_upload *u, const void *data, size_t len, fb_core_err *err)
{
    if (u->wfd < 0)
        return fb_core_fail(err, FB_CORE_FILE_ERROR, "the transfer has failed");
    /* SIGPIPE is ignored by the process (a closed read end means the
     * sandbox refused the file: EPIPE here, the reason at finish). */
    if (fb_write_all(u->wfd, data, len) < 0) {
        close(u->wfd);
        u->wfd = -1;
        return fb_core_fail(err, FB_CORE_FILE_ERROR, "the sandbox stopped taking the file");
    }
    u->size += len;
    return 0;
}

static int upload_end(fb_upload *u, bool complete, uint64_t *size, fb_core_err *err)
{
    if (u->wfd >= 0)
        close(u->wfd);
    u->wfd = -1;
    pthread_join(u->thread, NULL);
    const char *id = u->ref->s->id;
    int rc = 0;
    if (u->code != FB_OK) {
        fb_core_audit(u->c, &u->caller, "file", id, "put", "error", u->ferr.msg);
        rc = fb_core_fail(err, file_error_code(u->code), "%s", u->ferr.msg);
    } else if (!complete) {
        fb_core_audit(u->c, &u->caller, "file", id, "put", "error", "the upload ended before its body was complete");
        rc = fb_core_fail(err, FB_CORE_BAD_REQUEST, "the upload ended before its body was complete");
    } else {
        fb_core_audit(u->c, &u->caller, "file", id, "put", "allowed", u->path);
        if (size)
            *size = u->size;
    }
    fb_core_sandbox_put(u->c, u->ref);
    free(u);
    return rc;
}

int fb_core_upload_finish(fb_upload *u, uint64_t *size, fb_core_err *err)
{
    return upload_end(u, true, size, err);
}

void fb_core_upload_abort(fb_upload *u)
{
    if (u)
        upload_end(u, false, NULL, NULL);
}

int fb_core_file_get(fb_core *c, fb_caller *caller, fb_sb_ref *ref, const char *path, int fd, fb_core_err *err)
{
    if (check_ref(ref, err) < 0 || check_path(path, err) < 0)
        return -1;
    core_sandbox *s = ref->s;
    fb_err ferr = {{0}};
    fb_errc code = s->sb ? fb_file_get(s->sb, path, fd, c->cfg->limits.max_file_bytes, &ferr) : sandbox_gone(&ferr);
    int r = code == FB_OK ? 0 : -1;
    fb_core_audit(c, caller, "file", s->id, "get", r < 0 ? "error" : "allowed", r < 0 ? ferr.msg : path);
    if (r < 0)
        return fb_core_fail(err, file_error_code(code), "%s", ferr.msg);
    return 0;
}

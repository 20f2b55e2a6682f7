/*
 * h_files.c - /node/v1/sandboxes/{id}/files (docs/node-api.md): an upload
 * streamed from the request body through a pipe into fb_file_put on a
 * thread, a download streamed out of fb_file_get through a pipe; memory
 * stays a pipe's worth whatever the size.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <jansson.h>

#include "node/http.h"

typedef struct upload {
    int wfd, rfd;
    pthread_t thread;
    bool started;
    fb_sandbox *sb;
    char path[4097];
    unsigned mode;
    uint64_t size;
    bool write_failed;
    fb_errc code;
    fb_err ferr;
} upload;

/* ---- files ------------------------------------------------------------------------------- */

/* A path under /workspace or /tmp, without "..", "." or empty parts. */
static const char *check_path(const char *p)
{
    if (!p || !p[0])
        return "the \"path\" query parameter is required";
    size_t n = strlen(p);
    if (n > 4096)
        return "\"path\" is too long";
    json_t *s = json_string(p);
    if (!s)
        return "\"path\" is not valid UTF-8";
    json_decref(s);
    if (!(strncmp(p, "/workspace/", 11) == 0 || strncmp(p, "/tmp/", 5) == 0))
        return "\"path\" must be a file under /workspace or /tmp";
    for (const char *c = p + 1; *c;) {
        const char *slash = strchr(c, '/');
        size_t len = slash ? (size_t)(slash - c) : strlen(c);
        if (len == 0 || (len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
            return "\"path\" may not contain empty, \".\" or \"..\" parts";
        c += len;
        if (*c == '/')
            c++;
    }
    return NULL;
}

static void *upload_main(void *arg)
{
    upload *u = arg;
    u->code = fb_file_put(u->sb, u->path, u->rfd, u->mode, &u->ferr);
    close(u->rfd); /* whatever is left unread is refused: the writer gets EPIPE */
    u->rfd = -1;
    return NULL;
}

void nh_upload_finish(nreq *r)
{
    upload *u = r->up;
    if (!u)
        return;
    if (u->wfd >= 0)
        close(u->wfd);
    u->wfd = -1;
    if (u->started)
        pthread_join(u->thread, NULL);
    if (u->rfd >= 0)
        close(u->rfd);
    u->rfd = -1;
    u->started = false;
}

enum MHD_Result nh_put_begin(nreq *r)
{
    const char *path = nh_query(r, "path");
    const char *bad = check_path(path);
    if (bad)
        return nh_error(r, 400, "bad_path", "%s", bad);
    uint64_t mode = 0644;
    const char *m = nh_query(r, "mode");
    if (m) {
        char *end = NULL;
        errno = 0;
        unsigned long v = strtoul(m, &end, 8);
        if (!m[0] || *end || errno || v > 0777)
            return nh_error(r, 400, "bad_request", "\"mode\" must be octal, at most 0777");
        mode = v;
    }
    const char *cl = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Content-Length");
    if (!cl)
        return nh_error(r, 400, "bad_request", "an upload needs a Content-Length");
    enum MHD_Result rc;
    if (!nh_open_sandbox(r, &rc))
        return rc;
    upload *u = calloc(1, sizeof *u);
    int p[2];
    if (!u || pipe2(p, O_CLOEXEC) < 0) {
        free(u);
        return nh_error(r, 503, "unavailable", "cannot stage the file");
    }
    u->rfd = p[0];
    u->wfd = p[1];
    u->sb = r->s->sb;
    u->mode = (unsigned)mode;
    snprintf(u->path, sizeof u->path, "%s", path);
    r->up = u;
    if (pthread_create(&u->thread, NULL, upload_main, u) != 0)
        return nh_error(r, 503, "unavailable", "cannot start the transfer");
    u->started = true;
    return MHD_YES;
}

void nh_put_chunk(nreq *r, const char *data, size_t n)
{
    upload *u = r->up;
    if (u->wfd < 0)
        return;
    if (fb_write_all(u->wfd, data, n) < 0) {
        close(u->wfd);
        u->wfd = -1;
        u->write_failed = true;
        return;
    }
    u->size += n;
}

void nh_put_cut(nreq *r)
{
    upload *u = r->up;
    if (u && u->wfd >= 0) {
        close(u->wfd);
        u->wfd = -1;
    }
}

enum MHD_Result nh_put_end(nreq *r)
{
    upload *u = r->up;
    nh_upload_finish(r);
    if (u->code != FB_OK)
        return nh_errc(r, u->code, u->ferr.msg);
    if (u->write_failed)
        return nh_error(r, 500, "io_error", "the sandbox stopped taking the file");
    return nh_json(r, 201, json_pack("{s:s, s:I}", "path", u->path, "size", (json_int_t)u->size));
}

/* A download: a thread copies the file into a pipe (fb_file_get), the
 * response reads the other end as the gateway takes it, so memory stays a
 * pipe's worth whatever the size.  The answer's status waits for the
 * first byte or the end: a refusal (missing, too large - decided from the
 * size the agent reports before any byte) is still an error answer. */
typedef struct download {
    fb_node *n;
    node_sb *s;              /* held until the copy ended */
    int rfd, wfd;
    pthread_t thread;
    bool joined;
    char path[4097];
    uint64_t max;
    fb_errc code;
    fb_err ferr;
} download;

static void *download_main(void *arg)
{
    download *d = arg;
    d->code = fb_file_get(d->s->sb, d->path, d->wfd, d->max, &d->ferr);
    close(d->wfd); /* the reader sees the end */
    d->wfd = -1;
    return NULL;
}

static void download_join(download *d)
{
    if (!d->joined)
        pthread_join(d->thread, NULL);
    d->joined = true;
}

static void download_free(void *cls)
{
    download *d = cls;
    if (d->rfd >= 0)
        close(d->rfd); /* a copy still running gets EPIPE and stops */
    d->rfd = -1;
    download_join(d);
    node_sb_put(d->n, d->s);
    free(d);
}

static ssize_t download_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    download *d = cls;
    for (;;) {
        ssize_t k = read(d->rfd, out, max);
        if (k > 0)
            return k;
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        download_join(d);
        /* A copy that failed half-way cuts the response short: the
         * gateway sees a broken body, never a truncated file as whole. */
        return d->code == FB_OK ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
    }
}

enum MHD_Result nh_files_get(nreq *r)
{
    const char *path = nh_query(r, "path");
    const char *bad = check_path(path);
    if (bad)
        return nh_error(r, 400, "bad_path", "%s", bad);
    uint64_t max = r->n->cfg->limits.max_file_bytes;
    const char *mq = nh_query(r, "max");
    if (mq && fb_parse_u64(mq, 0, UINT64_MAX >> 1, &max) < 0)
        return nh_error(r, 400, "bad_request", "\"max\" must be a byte count");
    if (max > r->n->cfg->limits.max_file_bytes)
        max = r->n->cfg->limits.max_file_bytes;
    enum MHD_Result rc;
    if (!nh_open_sandbox(r, &rc))
        return rc;
    download *d = calloc(1, sizeof *d);
    int p[2];
    if (!d || pipe2(p, O_CLOEXEC) < 0) {
        free(d);
        return nh_error(r, 503, "unavailable", "cannot stage the file");
    }
    d->n = r->n;
    d->s = r->s; /* the download holds the request's reference from here */
    r->s = NULL;
    d->rfd = p[0];
    d->wfd = p[1];
    d->max = max;
    snprintf(d->path, sizeof d->path, "%s", path);
    if (pthread_create(&d->thread, NULL, download_main, d) != 0) {
        close(d->wfd);
        d->joined = true;
        download_free(d);
        return nh_error(r, 503, "unavailable", "cannot start the transfer");
    }
    struct pollfd pfd = {d->rfd, POLLIN, 0};
    int ready;
    do
        ready = poll(&pfd, 1, (int)(r->n->cfg->limits.request_timeout_s * 1000));
    while (ready < 0 && errno == EINTR);
    int avail = 0;
    if (ready > 0 && ioctl(d->rfd, FIONREAD, &avail) == 0 && avail == 0) {
        /* The end before any byte: an empty file, or a refusal. */
        download_join(d);
        if (d->code != FB_OK) {
            rc = nh_errc(r, d->code, d->ferr.msg);
            download_free(d);
            return rc;
        }
    } else if (ready <= 0) {
        download_free(d);
        return nh_error(r, 503, "unavailable", "the sandbox did not start sending the file");
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, download_read, d,
                                                                  download_free);
    if (!resp) {
        download_free(d);
        return MHD_NO;
    }
    return nh_queue(r, 200, resp, "application/octet-stream");
}


/*
 * http.h - what the files of the node's /node/v1 listener share: the
 * request being served, the answers, the JSON helpers and the handlers
 * (server.c runs the pipeline; h_sandboxes.c, h_execs.c and h_files.c
 * are the routes).  Private to src/node.
 */
#ifndef FB_NODE_HTTP_H
#define FB_NODE_HTTP_H

#include <jansson.h>
#include <microhttpd.h>

#include "core/core.h"
#include "node/internal.h"

enum route {
    R_HEALTHZ,
    R_SANDBOXES,     /* GET list, POST create */
    R_SANDBOX,       /* GET, PATCH, DELETE */
    R_EXECS,         /* POST */
    R_EVENTS,        /* GET */
    R_STDIN,         /* POST */
    R_SIGNAL,        /* POST */
    R_FILES,         /* PUT, GET */
};

enum body { B_NONE, B_JSON, B_STDIN, B_FILE };

typedef struct nreq {
    fb_node *n;
    struct MHD_Connection *conn;
    const char *method;
    int route;
    char sid[NODE_SB_ID_MAX];
    uint64_t exec;
    fb_caller caller;        /* request id and source address */
    char actor[96];          /* "gateway:NAME" */
    bool answered;
    enum body body;
    uint64_t cap, received;
    bool too_large;
    char *buf;
    size_t len, bcap;
    node_sb *s;              /* held while the request runs */
    node_exec *e;
    bool stdin_failed;
    fb_errc stdin_code;
    struct upload *up;       /* a file being put (h_files.c) */
} nreq;

/* ---- answers (server.c) ---- */

/* Queues resp (taking it) with the request id; logs the answer. */
enum MHD_Result nh_queue(nreq *r, int status, struct MHD_Response *resp, const char *type);
enum MHD_Result nh_json(nreq *r, int status, json_t *body /* stolen */);
/* {"error":{"code","message"}}. */
enum MHD_Result nh_error(nreq *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A typed error with the status docs/node-api.md gives it. */
enum MHD_Result nh_errc(nreq *r, fb_errc c, const char *msg);
enum MHD_Result nh_empty(nreq *r, int status);
const char *nh_query(nreq *r, const char *name);
bool nh_method_is(const nreq *r, const char *m);
/* An optional unsigned field in [min,max] (def when absent).  false: bad. */
bool nh_get_u64(json_t *o, const char *key, uint64_t def, uint64_t min, uint64_t max, uint64_t *out);
const char *nh_get_str(json_t *o, const char *key);
/* The body as an object of only the keys listed; NULL: answered 400. */
json_t *nh_body_json(nreq *r, const char *const *keys, enum MHD_Result *rc);

/* ---- h_sandboxes.c ---- */
/* The sandbox of the path, held in r->s.  false: answered 404. */
bool nh_open_sandbox(nreq *r, enum MHD_Result *rc);
enum MHD_Result nh_healthz(nreq *r);
enum MHD_Result nh_list(nreq *r);
enum MHD_Result nh_create(nreq *r);
enum MHD_Result nh_get(nreq *r);
enum MHD_Result nh_patch(nreq *r);
enum MHD_Result nh_delete(nreq *r);

/* ---- h_execs.c ---- */
/* The exec of the path, held in r->e (and its sandbox in r->s). */
bool nh_open_exec(nreq *r, enum MHD_Result *rc);
enum MHD_Result nh_exec(nreq *r);
enum MHD_Result nh_events(nreq *r);
enum MHD_Result nh_signal(nreq *r);
/* stdin: decided from the headers, written as the body arrives. */
enum MHD_Result nh_stdin_begin(nreq *r);
bool nh_stdin_write(nreq *r, const char *data, size_t n);
enum MHD_Result nh_stdin_end(nreq *r);

/* ---- h_files.c ---- */
enum MHD_Result nh_put_begin(nreq *r);
void nh_put_chunk(nreq *r, const char *data, size_t n);
/* The body went over its cap: the sandbox gets no more of it. */
void nh_put_cut(nreq *r);
enum MHD_Result nh_put_end(nreq *r);
/* Ends a put that is still running (the body stopped short) and frees it. */
void nh_upload_finish(nreq *r);
enum MHD_Result nh_files_get(nreq *r);

#endif

/*
 * internal.h - what the E2B listener's files share (src/compat/e2b only).
 *
 * listener.c  the libmicrohttpd daemon and the request pipeline: which API
 *             a request is for, who it is from, its body
 * reply.c     answers: E2B's {code, message} errors, JSON, logging
 * boxes.c     what E2B keeps per sandbox and ForgeBox does not: the envd
 *             access token, template, metadata, envVars, the processes
 *             (with E2B's pids) and the code interpreter's contexts
 * control.c   the control API (/sandboxes, /v2/sandboxes)
 * envd_files.c  GET/POST /files
 * connect.c   Connect-RPC framing (unary JSON and enveloped streams)
 * process.c   process.Process
 * filesystem.c  filesystem.Filesystem
 * execute.c   the code interpreter's POST /execute
 */
#ifndef FB_E2B_INTERNAL_H
#define FB_E2B_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "compat/e2b/e2b.h"
#include "core/core.h"
#include "gateway/authgate.h"

/* What envd version the sandboxes claim: the SDK turns features on by it
 * (0.5.2 closeStdin, 0.5.7 octet-stream uploads; 0.6.2 file metadata,
 * which is not supported here, stays off). */
#define E2B_ENVD_VERSION "0.5.7"
#define E2B_TOKEN_LEN 32            /* hex characters of an envd access token */
#define E2B_MAX_BOXES 4096
#define E2B_MAX_PROCS 64            /* commands known per sandbox (running, or ended and still read) */
#define E2B_MAX_CTX 8               /* code interpreter contexts per sandbox */
#define E2B_HOME "/home/user"       /* E2B's home directory, /workspace here */

typedef struct e2b_boxes e2b_boxes;

typedef struct e2b_srv {
    fb_gateway_shared sh;
    struct MHD_Daemon *daemon;
    e2b_boxes *boxes;
} e2b_srv;

typedef enum e2b_api { E2B_API_CONTROL, E2B_API_ENVD } e2b_api;

typedef struct e2b_box e2b_box;

typedef struct e2b_req {
    e2b_srv *s;
    struct MHD_Connection *conn;
    const char *method;
    const char *url;
    e2b_api api;
    fb_caller caller;
    e2b_box *box;               /* envd: the sandbox's entry (a reference) */
    bool answered;
    bool anonymous;             /* envd without the token: /contexts only */
    bool too_large;
    uint64_t cap, received;
    char *body;                 /* buffered bodies */
    size_t len, bufcap;
    void *upload;               /* POST /files: envd_files.c's state */
    int status;
} e2b_req;

/* ---- reply.c ---------------------------------------------------------------------- */

enum MHD_Result e2b_queue(e2b_req *r, int status, struct MHD_Response *resp, const char *type);
enum MHD_Result e2b_send_json(e2b_req *r, int status, json_t *body /* stolen */);
enum MHD_Result e2b_send_empty(e2b_req *r, int status);
/* E2B's error body {"code": status, "message": msg}. */
enum MHD_Result e2b_send_error(e2b_req *r, int status, const char *msg);
/* A service's typed error, with the status the SDK maps. */
enum MHD_Result e2b_send_core_error(e2b_req *r, const fb_core_err *err);
int e2b_status_of(fb_core_code code);
enum MHD_Result e2b_send_429(e2b_req *r, int wait, const char *why);
const char *e2b_header(e2b_req *r, const char *name);
const char *e2b_query(e2b_req *r, const char *name);
/* The request body as a JSON object ({} when empty); NULL: answered 400. */
json_t *e2b_body_json(e2b_req *r, enum MHD_Result *rc);

/* ---- boxes.c ---------------------------------------------------------------------- */

typedef struct e2b_proc {
    uint32_t pid;
    char exec_id[FB_EXEC_ID_MAX];
    fb_core_exec *x;            /* attached: keeps a background command alive */
    json_t *config;             /* {cmd, args, envs, cwd} as E2B lists it */
    char tag[64];
    int refs;
    bool dropped;               /* out of the table; the last put releases */
} e2b_proc;

e2b_boxes *e2b_boxes_new(void);
/* Releases every exec handle (before the service closes) and frees. */
void e2b_boxes_free(e2b_boxes *b);
/* A new entry for a sandbox just created (or first connected to) by
 * caller; token_out receives its envd access token. */
int e2b_box_add(e2b_boxes *b, const fb_sandbox_info *info, const fb_caller *caller, const char *template_id,
                json_t *metadata, json_t *env_vars, char token_out[E2B_TOKEN_LEN + 1]);
/* The sandbox's TTL changed: its entry goes at the new end. */
void e2b_box_set_expiry(e2b_boxes *b, const char *id, const char *expires_at);
/* The entry of a sandbox (a reference) or NULL. */
e2b_box *e2b_box_get(e2b_boxes *b, const char *id);
void e2b_box_put(e2b_boxes *b, e2b_box *box);
/* The sandbox is gone: its entry goes, its processes are let go. */
void e2b_box_forget(e2b_boxes *b, const char *id);
/* Whether token is the box's (constant time). */
bool e2b_box_token_ok(const e2b_box *box, const char *token);
const char *e2b_box_id(const e2b_box *box);
const char *e2b_box_token(const e2b_box *box);
const char *e2b_box_template(const e2b_box *box);
/* New references (json null or objects). */
json_t *e2b_box_metadata(const e2b_box *box);
json_t *e2b_box_env_vars(const e2b_box *box);
/* The key envd requests with the box's token act for (its creator's). */
const char *e2b_box_key_id(const e2b_box *box);
/* Metadata of a sandbox by id for listings (new reference; {} if none),
 * and its template ("base" if none). */
json_t *e2b_boxes_metadata_of(e2b_boxes *b, const char *id, char *template_out, size_t cap);

/* Processes: pids count from 1 per sandbox.  e2b_proc_add takes x and
 * config and returns a reference for the caller (the box keeps another);
 * NULL when the sandbox has E2B_MAX_PROCS commands already: config is
 * freed, x is still the caller's. */
e2b_proc *e2b_proc_add(e2b_box *box, fb_core_exec *x, json_t *config /* stolen */, const char *tag);
e2b_proc *e2b_proc_find(e2b_box *box, uint32_t pid, const char *tag);
void e2b_proc_put(e2b_box *box, e2b_proc *p);
/* {processes: [...]} of the running ones. */
json_t *e2b_proc_list(e2b_box *box);

/* The code interpreter's contexts: the server exec of a context, if any
 * (a reference to put back with e2b_proc_put), and setting it (takes x;
 * -1 with x still the caller's when there are E2B_MAX_CTX contexts). */
e2b_proc *e2b_ctx_server(e2b_box *box, const char *ctx);
int e2b_ctx_set_server(e2b_box *box, const char *ctx, fb_core_exec *x);
bool e2b_box_repl_shipped(e2b_box *box, bool set);

/* ---- the handlers ------------------------------------------------------------------ */

enum MHD_Result e2b_control(e2b_req *r);
enum MHD_Result e2b_envd(e2b_req *r);
/* Whether url takes a streamed body (POST /files). */
bool e2b_files_streams(const e2b_req *r);
enum MHD_Result e2b_files_begin(e2b_req *r, bool *answered);
void e2b_files_chunk(e2b_req *r, const char *data, size_t len);
enum MHD_Result e2b_files_end(e2b_req *r);
void e2b_files_abort(e2b_req *r);
enum MHD_Result e2b_files_get(e2b_req *r, fb_sb_ref *ref);

/* Connect-RPC (connect.c). */
typedef enum e2b_rpc_code {
    E2B_RPC_CANCELED, E2B_RPC_UNKNOWN, E2B_RPC_INVALID_ARGUMENT, E2B_RPC_DEADLINE_EXCEEDED, E2B_RPC_NOT_FOUND,
    E2B_RPC_ALREADY_EXISTS, E2B_RPC_PERMISSION_DENIED, E2B_RPC_RESOURCE_EXHAUSTED, E2B_RPC_FAILED_PRECONDITION,
    E2B_RPC_ABORTED, E2B_RPC_OUT_OF_RANGE, E2B_RPC_UNIMPLEMENTED, E2B_RPC_INTERNAL, E2B_RPC_UNAVAILABLE,
    E2B_RPC_DATA_LOSS, E2B_RPC_UNAUTHENTICATED,
} e2b_rpc_code;
e2b_rpc_code e2b_rpc_code_of(fb_core_code code);
/* Whether the request is a streaming call (application/connect+json). */
bool e2b_rpc_is_stream(e2b_req *r);
/* The request message: the JSON body, or the first enveloped message of
 * a streaming call.  NULL: answered. */
json_t *e2b_rpc_request(e2b_req *r, enum MHD_Result *rc);
/* Every enveloped message of a client-streaming body, as an array. */
json_t *e2b_rpc_messages(e2b_req *r, enum MHD_Result *rc);
enum MHD_Result e2b_rpc_reply(e2b_req *r, json_t *msg /* stolen */);
enum MHD_Result e2b_rpc_error(e2b_req *r, e2b_rpc_code code, const char *msg);
enum MHD_Result e2b_rpc_core_error(e2b_req *r, const fb_core_err *err);
/* Appends one enveloped message (flags 0, or 2 for the end). */
int e2b_rpc_frame(char **buf, size_t *len, size_t *cap, unsigned flags, json_t *msg /* stolen */);

/* Streams (stream.c): fmt turns one event (NULL: the stream was idle
 * idle_ms) into bytes with e2b_stream_append; finish (may be NULL) adds
 * the last bytes after the terminal event; release frees what the owner
 * hung on ctx (and the handle x if it is the stream's).  Allocate with
 * calloc; e2b_stream_answer takes it. */
typedef struct e2b_stream e2b_stream;
struct e2b_stream {
    fb_core_exec *x;
    uint64_t pos;
    int idle_ms;
    bool (*fmt)(e2b_stream *st, const fb_exec_event *ev);
    bool (*finish)(e2b_stream *st);
    void (*release)(e2b_stream *st);
    void *ctx;
    /* the stream's own */
    char *buf;
    size_t len, off, cap;
    bool ended, closed;
    uint64_t quiet_since;
};
int e2b_stream_append(e2b_stream *st, const void *data, size_t n);
enum MHD_Result e2b_stream_answer(e2b_req *r, e2b_stream *st, const char *type);

enum MHD_Result e2b_process(e2b_req *r, const char *method, fb_sb_ref *ref);
enum MHD_Result e2b_filesystem(e2b_req *r, const char *method, fb_sb_ref *ref);
enum MHD_Result e2b_execute(e2b_req *r, fb_sb_ref *ref);

/* repl.py, compiled in (build/gen/e2b_repl.c, made by the Makefile). */
extern const unsigned char fb_e2b_repl_py[];
extern const size_t fb_e2b_repl_py_len;

/* Whether s[0..n) is 1..max characters of [A-Za-z0-9_-] (ids in paths
 * and bodies). */
bool e2b_valid_id(const char *s, size_t n, size_t max);
/* Paths as E2B names them: relative ones and /home/user live in
 * /workspace.  false: too long. */
bool e2b_path(const char *in, char *out, size_t cap);
/* The sandbox's envVars and extra ones as an fb_env_var array (pointers
 * into the JSON objects, which must outlive it); NULL + n 0 when empty. */
fb_env_var *e2b_env(json_t *base, json_t *extra, size_t *n);
/* Runs argv to its end in the sandbox (PLAIN); stdout (if wanted) as a
 * malloc'd string.  Returns the exit code, or -1 with err. */
int e2b_run(e2b_req *r, fb_sb_ref *ref, const char *const *argv, char **out, size_t *outlen, fb_core_err *err);

#endif

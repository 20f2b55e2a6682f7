/*
 * gw.h - the gateway's internal pieces, shared by its .c files only.
 *
 * The gateway is an HTTP adapter over the service layer (src/core): it
 * turns requests into service calls and service answers into responses,
 * and nothing else - no SQL, no rules, no sandbox lifecycle.
 *
 * libmicrohttpd runs in thread-per-connection mode: a slow or stalled
 * client holds only its own thread (and is cut off by the connection
 * timeout), never anyone else's.  Every request goes through one
 * pipeline (server.c), driven by the route's declaration (gw_route):
 * before a single byte of body is read it is routed (404/405),
 * authenticated (401, failures rate-limited per source and globally:
 * 429), rate-limited per key and user (429), authorised against the
 * route's permission and resolved resource (403/404, audited), checked
 * for its Content-Type (415) and declared size (413); then the body is
 * parsed against the route's field list (400) or streamed (file
 * uploads), and the handler runs.  Every answer carries the request id
 * in X-Request-Id, the log line and the audit entries.
 */
#ifndef FB_GW_H
#define FB_GW_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/core.h"
#include "gateway/authgate.h"
#include "gateway/body.h"
#include "gateway/ratelimit.h"
#include "gateway/router.h"
#include "mcp/mcp.h"

typedef struct fb_gateway {
    fb_core *core;
    const fb_config *cfg;
    fb_gateway_shared sh;   /* the same service and config, and the rate limiters and TLS
                               material every listener shares (authgate.h) */
    fb_mcp_sessions *mcp;   /* MCP Streamable HTTP sessions (h_mcp.c) */
    struct MHD_Daemon *daemon;
    struct gw_mtls *mtls;   /* tls.client_ca set: every request's client certificate (mtls.h) */
} fb_gateway;

/* How a route finds and authorises what it acts on (server.c runs it
 * before the body is read). */
typedef enum gw_resolve {
    GW_RES_PUBLIC,   /* no key, no permission (health) */
    GW_RES_TEAM,     /* perm in the caller's own team; audited as `resource` */
    GW_RES_PARAM,    /* the same, audited as the {id} (a key id) */
    GW_RES_ADMIN,    /* admins only, then perm: `what` spans all teams */
    GW_RES_SANDBOX,  /* the {id} sandbox, opened for perm (404 for unknown or another team's) */
    GW_RES_TASK,     /* the {id} task, opened for perm (404 for unknown or another team's) */
    GW_RES_KEY,      /* any valid key (authentication audited), no route permission: every
                        service the handler calls decides and audits its own (MCP) */
    GW_RES_SELF,     /* any authenticated caller, about itself (its own session) */
} gw_resolve;

typedef enum gw_body_kind {
    GW_BODY_NONE,    /* ignored (capped at limits.max_body_bytes) */
    GW_BODY_JSON,    /* application/json, parsed against `fields` */
    GW_BODY_STREAM,  /* application/octet-stream, streamed (limits.max_file_bytes) */
    GW_BODY_RAW,     /* application/json, kept unparsed in r->body for the handler (JSON-RPC) */
} gw_body_kind;

typedef struct gw_req gw_req;
typedef enum MHD_Result (*gw_handler)(gw_req *r);

/* Streaming bodies: begin runs before the body (may answer), chunk per
 * piece (returns false to stop taking the body; the error is kept), end
 * answers. */
typedef struct gw_stream_ops {
    enum MHD_Result (*begin)(gw_req *r, bool *answered);
    bool (*chunk)(gw_req *r, const char *data, size_t len);
    enum MHD_Result (*end)(gw_req *r);
    void (*abort)(gw_req *r);
} gw_stream_ops;

typedef struct gw_route {
    gw_route_def def;          /* method, pattern */
    gw_resolve resolve;
    fb_perm perm;
    const char *resource;      /* GW_RES_TEAM/ADMIN: the audited resource */
    const char *what;          /* GW_RES_ADMIN: what spans all teams */
    gw_body_kind body;
    const gw_field *fields;    /* GW_BODY_JSON */
    bool body_required;
    gw_handler fn;             /* GW_BODY_NONE and GW_BODY_JSON */
    const gw_stream_ops *stream; /* GW_BODY_STREAM */
    /* Runs after routing, before authentication (NULL: none); false:
     * answered with *rc.  For checks that must refuse before anything
     * else, such as MCP's Origin check. */
    bool (*screen)(gw_req *r, enum MHD_Result *rc);
    /* GW_RES_SANDBOX and GW_RES_TEAM: the handler may start its action
     * while the allowed permission entry becomes durable
     * (fb_caller.audit_overlap); it, or the core service it calls, calls
     * fb_core_audit_flush before anything of the action is answered
     * (docs/audit.md, "Exec" and "Create"). */
    bool audit_overlap;
} gw_route;

/* One request, from its first callback to its completion. */
struct gw_req {
    fb_gateway *g;
    struct MHD_Connection *conn;
    const char *method;
    const gw_route *rt;        /* NULL: unmatched */
    gw_params params;
    fb_caller caller;
    fb_sb_ref *ref;            /* GW_RES_SANDBOX: put back at completion */
    fb_task_ref *task;         /* GW_RES_TASK: put back at completion */
    uint64_t cap;              /* body limit */
    bool too_large;
    bool answered;             /* a response is queued; the body is dropped */
    char *body;                /* GW_BODY_JSON */
    size_t len, bufcap;
    json_t *json;              /* the parsed body, for the handler */
    void *stream_state;        /* GW_BODY_STREAM */
    uint64_t received;
};

/* The route tables each resource's handler file declares (routes.c
 * assembles them). */
extern const gw_route gw_routes_health[];
extern const gw_route gw_routes_sandboxes[];
extern const gw_route gw_routes_execs[];
extern const gw_route gw_routes_exec_events[];
extern const gw_route gw_routes_files[];
extern const gw_route gw_routes_keys[];
extern const gw_route gw_routes_users[];
extern const gw_route gw_routes_teams[];
extern const gw_route gw_routes_audit[];
extern const gw_route gw_routes_tasks[];
extern const gw_route gw_routes_mcp[];
extern const gw_route gw_routes_sessions[];
extern const gw_route gw_routes_config[];

/* The assembled table (routes.c). */
size_t gw_routes_count(void);
const gw_route *gw_route_at(size_t i);
const gw_route_def *gw_route_defs(void);

/* ---- execs (h_execs.c, h_exec_events.c) ------------------------------------------ */

/* How a command ended, as the API shows it (ExecExit). */
json_t *gw_exec_result_json(const fb_exec_result *res, uint64_t dropped);
/* The {exec_id} exec of the {id} sandbox (the route's resolved sandbox,
 * which is put back); NULL: answered, with *rc. */
fb_core_exec *gw_exec_open(gw_req *r, bool attach, enum MHD_Result *rc);
/* Answers with x's events as server-sent events from `from` (a resume
 * token, "0" for the start; NULL: "0"), and takes x. */
enum MHD_Result gw_exec_stream(gw_req *r, fb_core_exec *x, const char *from);

/* ---- the console (session_auth.c, h_sessions.c, h_console.c) ------------------------- */

/* The fbx_session cookie of a request without Authorization: 0 when there
 * is none (the key path applies), 1 authenticated (rate limits, and for
 * POST/PUT/PATCH/DELETE the CSRF token and the Origin, checked and
 * audited), -1 answered with *rc. */
int gw_session_authenticate(gw_req *r, enum MHD_Result *rc);
/* Whether the request's Origin (else Referer) is this gateway's own
 * origin: 1 same, 0 neither header, -1 foreign. */
int gw_request_origin(gw_req *r);
/* Whether url is under /console (then gw_console_serve answers it). */
bool gw_console_path(const char *url);
enum MHD_Result gw_console_serve(gw_req *r, const char *url);

/* ---- responses (respond.c) ---------------------------------------------------- */

enum MHD_Result gw_send_raw(gw_req *r, int status, const char *type, void *data, size_t len,
                            enum MHD_ResponseMemoryMode mode);
enum MHD_Result gw_send_json(gw_req *r, int status, json_t *body /* stolen */);
enum MHD_Result gw_send_error(gw_req *r, int status, const char *code, const char *msg);
/* A service's typed error, mapped to its status by one table. */
enum MHD_Result gw_send_core_error(gw_req *r, const fb_core_err *err);
int gw_status_of(fb_core_code code);
enum MHD_Result gw_send_429(gw_req *r, int wait, const char *why);
/* Queues a response built elsewhere (streams, files) with the common
 * headers, counts and logs it. */
enum MHD_Result gw_queue(gw_req *r, int status, struct MHD_Response *resp, const char *type);
/* Counts and logs one answer. */
void gw_note_response(gw_req *r, int status);
/* A query parameter (NULL if absent). */
const char *gw_query(gw_req *r, const char *name);

#endif

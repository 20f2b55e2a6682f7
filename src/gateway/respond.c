/*
 * respond.c - every answer the gateway gives (gw.h).
 *
 * Errors are {"error": {"code", "message"}} with the status a table gives
 * for the service's typed code; no message is ever parsed.  Every answer
 * carries X-Request-Id and Cache-Control: no-store, and is counted and
 * logged once.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/authgate.h"
#include "gateway/gw.h"
#include "gateway/listener.h"

#define UNAUDITED_BODY                                                                                      \
    "{\"error\":{\"code\":\"unavailable\",\"message\":\"the audit log cannot be written; refusing to act "      \
    "unaudited\"}}\n"

int gw_status_of(fb_core_code code)
{
    return gw_http_status(code);
}

void gw_note_response(gw_req *r, int status)
{
    const char *route = r->rt ? r->rt->def.pattern : "unmatched";
    fb_core_metrics_request(route, status);
    fb_log(status >= 500 ? "error" : "info", r->caller.request_id, "request",
           json_pack("{s:s, s:s, s:i, s:s}", "method", r->method, "route", route, "status", status, "ip",
                     r->caller.source_ip));
}

enum MHD_Result gw_queue(gw_req *r, int status, struct MHD_Response *resp, const char *type)
{
    /* No answer before its entries are durable: an authentication entry
     * still waiting for a permission entry to go with is written now. */
    if (fb_core_audit_flush(r->g->core, &r->caller) < 0) {
        MHD_destroy_response(resp);
        resp = MHD_create_response_from_buffer(
            strlen(UNAUDITED_BODY), (void *)UNAUDITED_BODY, MHD_RESPMEM_PERSISTENT);
        status = 503;
        type = "application/json";
    }
    if (!resp)
        return MHD_NO;
    enum MHD_Result rc = gw_queue_with(r->conn, status, resp, type, r->caller.request_id);
    r->answered = true;
    gw_note_response(r, status);
    return rc;
}

enum MHD_Result gw_send_raw(gw_req *r, int status, const char *type, void *data, size_t len,
                            enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, data, mode);
    if (!resp && mode == MHD_RESPMEM_MUST_FREE)
        free(data);
    return gw_queue(r, status, resp, type);
}

enum MHD_Result gw_send_json(gw_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return gw_send_raw(r, 503, "application/json",
                           (void *)"{\"error\":{\"code\":\"unavailable\",\"message\":\"out of memory\"}}\n",
                           strlen("{\"error\":{\"code\":\"unavailable\",\"message\":\"out of memory\"}}\n"),
                           MHD_RESPMEM_PERSISTENT);
    size_t n = strlen(text);
    /* One trailing newline makes curl output readable; cheap. */
    char *withnl = realloc(text, n + 2);
    if (withnl) {
        withnl[n] = '\n';
        withnl[n + 1] = '\0';
        text = withnl;
        n++;
    }
    return gw_send_raw(r, status, "application/json", text, n, MHD_RESPMEM_MUST_FREE);
}

enum MHD_Result gw_send_error(gw_req *r, int status, const char *code, const char *msg)
{
    json_t *m = json_string(msg);
    json_t *body = json_pack("{s:{s:s, s:o}}", "error", "code", code, "message",
                             m ? m : json_string("(message not valid UTF-8)"));
    return gw_send_json(r, status, body);
}

enum MHD_Result gw_send_core_error(gw_req *r, const fb_core_err *err)
{
    int status = gw_status_of(err->code);
    if (status == 500) {
        /* Details go to the log, never to the caller. */
        fb_log("error", r->caller.request_id, "internal error", json_pack("{s:s}", "error", err->msg));
        return gw_send_error(r, 500, "internal", "internal error (see the server log)");
    }
    return gw_send_error(r, status, fb_core_code_name(err->code), err->msg);
}

enum MHD_Result gw_send_429(gw_req *r, int wait, const char *why)
{
    char ra[16];
    snprintf(ra, sizeof ra, "%d", wait);
    json_t *body = json_pack("{s:{s:s, s:s}}", "error", "code", "rate_limited", "message", why);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(text ? strlen(text) : 0, text, MHD_RESPMEM_MUST_FREE);
    if (resp)
        MHD_add_response_header(resp, "Retry-After", ra);
    else
        free(text);
    return gw_queue(r, 429, resp, "application/json");
}

const char *gw_query(gw_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

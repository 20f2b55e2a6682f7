/*
 * reply.c - every answer the E2B listener gives (internal.h).
 *
 * Errors are E2B's {"code": <HTTP status>, "message": "..."}, the shape its
 * SDKs read (they map 401 to AuthenticationError, 404 to NotFoundError,
 * 429 to RateLimitError); the status comes from one table over the
 * service's typed codes, the native gateway's mapping.  Internal details
 * go to the log only.  Every answer is counted (route "e2b") and logged
 * once, with the request id that the audit entries carry.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat/e2b/internal.h"
#include "gateway/listener.h"

int e2b_status_of(fb_core_code code)
{
    return gw_http_status(code);
}

enum MHD_Result e2b_queue(e2b_req *r, int status, struct MHD_Response *resp, const char *type)
{
    if (!resp)
        return MHD_NO;
    enum MHD_Result rc = gw_queue_with(r->conn, status, resp, type, r->caller.request_id);
    r->answered = true;
    r->status = status;
    fb_core_metrics_request(r->api == E2B_API_ENVD ? "e2b envd" : "e2b control", status);
    fb_log(status >= 500 ? "error" : "info", r->caller.request_id, "e2b request",
           json_pack("{s:s, s:s, s:i, s:s}", "method", r->method, "path", r->url, "status", status, "ip",
                     r->caller.source_ip));
    return rc;
}

static enum MHD_Result send_text(e2b_req *r, int status, const char *type, char *text, size_t n)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(text);
    return e2b_queue(r, status, resp, type);
}

enum MHD_Result e2b_send_json(e2b_req *r, int status, json_t *body)
{
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!text)
        return e2b_send_empty(r, 503);
    return send_text(r, status, "application/json", text, strlen(text));
}

enum MHD_Result e2b_send_empty(e2b_req *r, int status)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    return e2b_queue(r, status, resp, NULL);
}

enum MHD_Result e2b_send_error(e2b_req *r, int status, const char *msg)
{
    json_t *m = json_string(msg);
    return e2b_send_json(r, status, json_pack("{s:i, s:o}", "code", status, "message",
                                              m ? m : json_string("(message not valid UTF-8)")));
}

enum MHD_Result e2b_send_core_error(e2b_req *r, const fb_core_err *err)
{
    int status = e2b_status_of(err->code);
    if (status == 500) {
        fb_log("error", r->caller.request_id, "internal error", json_pack("{s:s}", "error", err->msg));
        return e2b_send_error(r, 500, "internal error (see the server log)");
    }
    return e2b_send_error(r, status, err->msg);
}

enum MHD_Result e2b_send_429(e2b_req *r, int wait, const char *why)
{
    char ra[16];
    snprintf(ra, sizeof ra, "%d", wait);
    json_t *m = json_string(why);
    json_t *body = json_pack("{s:i, s:o}", "code", 429, "message", m ? m : json_string(""));
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return e2b_send_empty(r, 503);
    struct MHD_Response *resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Retry-After", ra); /* the SDK retries after it */
    return e2b_queue(r, 429, resp, "application/json");
}

const char *e2b_header(e2b_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *e2b_query(e2b_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

json_t *e2b_body_json(e2b_req *r, enum MHD_Result *rc)
{
    if (r->len == 0)
        return json_object();
    json_error_t je;
    json_t *j = json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        *rc = e2b_send_error(r, 400, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/*
 * connect.c - Connect-RPC with JSON, as envd speaks it to the SDK
 * (internal.h).
 *
 * A unary call is a POST of application/json; the answer is the response
 * message as JSON (200), or an error {"code": "not_found", "message": ...}
 * with the HTTP status the Connect protocol gives that code.  A streaming
 * call is application/connect+json: both directions are "envelopes", a
 * 5-byte header (one flags byte, a big-endian 32-bit length) and a JSON
 * message; the server's last envelope has flag 0x02 (end of stream) and
 * carries {} or {"error": {...}}, always under HTTP 200 once the stream
 * has begun.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat/e2b/internal.h"

static const struct {
    const char *name;
    int status;
} codes[] = {
    [E2B_RPC_CANCELED] = {"canceled", 499},
    [E2B_RPC_UNKNOWN] = {"unknown", 500},
    [E2B_RPC_INVALID_ARGUMENT] = {"invalid_argument", 400},
    [E2B_RPC_DEADLINE_EXCEEDED] = {"deadline_exceeded", 504},
    [E2B_RPC_NOT_FOUND] = {"not_found", 404},
    [E2B_RPC_ALREADY_EXISTS] = {"already_exists", 409},
    [E2B_RPC_PERMISSION_DENIED] = {"permission_denied", 403},
    [E2B_RPC_RESOURCE_EXHAUSTED] = {"resource_exhausted", 429},
    [E2B_RPC_FAILED_PRECONDITION] = {"failed_precondition", 400},
    [E2B_RPC_ABORTED] = {"aborted", 409},
    [E2B_RPC_OUT_OF_RANGE] = {"out_of_range", 400},
    [E2B_RPC_UNIMPLEMENTED] = {"unimplemented", 501},
    [E2B_RPC_INTERNAL] = {"internal", 500},
    [E2B_RPC_UNAVAILABLE] = {"unavailable", 503},
    [E2B_RPC_DATA_LOSS] = {"data_loss", 500},
    [E2B_RPC_UNAUTHENTICATED] = {"unauthenticated", 401},
};

e2b_rpc_code e2b_rpc_code_of(fb_core_code code)
{
    switch (code) {
    case FB_CORE_BAD_REQUEST:
    case FB_CORE_FILE_ERROR:
        return E2B_RPC_INVALID_ARGUMENT;
    case FB_CORE_UNAUTHORIZED:
        return E2B_RPC_UNAUTHENTICATED;
    case FB_CORE_FORBIDDEN:
        return E2B_RPC_PERMISSION_DENIED;
    case FB_CORE_NOT_FOUND:
        return E2B_RPC_NOT_FOUND;
    case FB_CORE_CONFLICT:
        return E2B_RPC_FAILED_PRECONDITION;
    case FB_CORE_TOO_LARGE:
    case FB_CORE_QUOTA:
        return E2B_RPC_RESOURCE_EXHAUSTED;
    case FB_CORE_SANDBOX_FAILED:
    case FB_CORE_UNAVAILABLE:
        return E2B_RPC_UNAVAILABLE;
    default:
        return E2B_RPC_INTERNAL;
    }
}

bool e2b_rpc_is_stream(e2b_req *r)
{
    const char *ct = e2b_header(r, "Content-Type");
    return ct && strncasecmp(ct, "application/connect+json", 24) == 0;
}

/* The enveloped messages of the body, in order. */
json_t *e2b_rpc_messages(e2b_req *r, enum MHD_Result *rc)
{
    json_t *arr = json_array();
    size_t off = 0;
    while (arr && off < r->len) {
        if (r->len - off < 5)
            break;
        const unsigned char *h = (const unsigned char *)r->body + off;
        size_t n = ((size_t)h[1] << 24) | ((size_t)h[2] << 16) | ((size_t)h[3] << 8) | h[4];
        if (h[0] & 0x01 || n > r->len - off - 5) /* compressed, or cut short */
            break;
        json_error_t je;
        json_t *m = json_loadb(r->body + off + 5, n, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(m)) {
            json_decref(m);
            break;
        }
        json_array_append_new(arr, m);
        off += 5 + n;
    }
    if (!arr || off != r->len) {
        json_decref(arr);
        *rc = e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "the body is not a sequence of JSON envelopes");
        return NULL;
    }
    return arr;
}

json_t *e2b_rpc_request(e2b_req *r, enum MHD_Result *rc)
{
    if (!e2b_rpc_is_stream(r)) {
        json_error_t je;
        json_t *j = r->len ? json_loadb(r->body, r->len, JSON_REJECT_DUPLICATES, &je) : json_object();
        if (!json_is_object(j)) {
            json_decref(j);
            *rc = e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "the body must be a JSON object");
            return NULL;
        }
        return j;
    }
    json_t *all = e2b_rpc_messages(r, rc);
    if (!all)
        return NULL;
    json_t *first = json_incref(json_array_get(all, 0));
    json_decref(all);
    if (!first)
        *rc = e2b_rpc_error(r, E2B_RPC_INVALID_ARGUMENT, "the stream holds no request message");
    return first;
}

int e2b_rpc_frame(char **buf, size_t *len, size_t *cap, unsigned flags, json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text)
        return -1;
    size_t n = strlen(text);
    if (*len + n + 5 > *cap) {
        size_t ncap = *cap ? *cap : 1024;
        while (ncap < *len + n + 5)
            ncap *= 2;
        char *nb = realloc(*buf, ncap);
        if (!nb) {
            free(text);
            return -1;
        }
        *buf = nb;
        *cap = ncap;
    }
    unsigned char *h = (unsigned char *)*buf + *len;
    h[0] = (unsigned char)flags;
    h[1] = (unsigned char)(n >> 24);
    h[2] = (unsigned char)(n >> 16);
    h[3] = (unsigned char)(n >> 8);
    h[4] = (unsigned char)n;
    memcpy(*buf + *len + 5, text, n);
    *len += n + 5;
    free(text);
    return 0;
}

/* A whole stream answered at once: msg (if any), then the end (flag 2). */
static enum MHD_Result send_frames(e2b_req *r, json_t *msg, json_t *end)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if ((msg && e2b_rpc_frame(&buf, &len, &cap, 0, msg) < 0) || e2b_rpc_frame(&buf, &len, &cap, 2, end) < 0) {
        free(buf);
        return e2b_send_empty(r, 503);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
    if (!resp)
        free(buf);
    return e2b_queue(r, 200, resp, "application/connect+json");
}

enum MHD_Result e2b_rpc_reply(e2b_req *r, json_t *msg)
{
    if (!e2b_rpc_is_stream(r))
        return e2b_send_json(r, 200, msg);
    return send_frames(r, msg, json_object());
}

enum MHD_Result e2b_rpc_error(e2b_req *r, e2b_rpc_code code, const char *msg)
{
    json_t *m = json_string(msg);
    json_t *err = json_pack("{s:s, s:o}", "code", codes[code].name, "message", m ? m : json_string(""));
    if (!e2b_rpc_is_stream(r))
        return e2b_send_json(r, codes[code].status, err);
    return send_frames(r, NULL, json_pack("{s:o}", "error", err));
}

enum MHD_Result e2b_rpc_core_error(e2b_req *r, const fb_core_err *err)
{
    e2b_rpc_code code = e2b_rpc_code_of(err->code);
    if (code == E2B_RPC_INTERNAL) {
        fb_log("error", r->caller.request_id, "internal error", json_pack("{s:s}", "error", err->msg));
        return e2b_rpc_error(r, code, "internal error (see the server log)");
    }
    return e2b_rpc_error(r, code, err->msg);
}

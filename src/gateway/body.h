/*
 * body.h - request bodies: the Content-Type a route takes, and JSON
 * object bodies checked against a declared field list.
 *
 * Pure (jansson only, no libmicrohttpd): unit tests and the fuzzer call
 * these directly.  A field list is the route's schema: each field's name,
 * JSON type and whether it is required; anything not listed is refused,
 * duplicate keys are refused, NUL bytes are refused.  Ranges and
 * cross-field rules belong to the service that owns them (src/core).
 */
#ifndef FB_GW_BODY_H
#define FB_GW_BODY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum gw_ftype {
    GW_T_STRING,
    GW_T_STRING_OR_NULL,
    GW_T_INT,
    GW_T_BOOL,
    GW_T_ARRAY,
    GW_T_OBJECT,
} gw_ftype;

typedef struct gw_field {
    const char *name;
    gw_ftype type;
    bool required;
    const char *why; /* the message for a wrong type or a missing field (NULL: a generic one) */
} gw_field;

/* The media types routes take. */
#define GW_MEDIA_JSON "application/json"
#define GW_MEDIA_OCTETS "application/octet-stream"

/* Whether a Content-Type header value names `want` (case-insensitive;
 * parameters such as "; charset=utf-8" allowed; NULL is no). */
bool gw_content_type_is(const char *header, const char *want);

/* Parses body[0..len) as a JSON object with only the listed fields
 * (fields ends with a NULL name).  An empty body is {} unless required.
 * Returns a new reference, or NULL with a message in msg. */
json_t *gw_body_json(const char *body, size_t len, const gw_field *fields, bool required, char *msg, size_t cap);

#endif

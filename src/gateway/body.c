/*
 * body.c - Content-Type checks and JSON object bodies (body.h).
 *
 * The messages are the API's: tests and clients read them, so each says
 * exactly which rule was broken and names the field.
 */
#define _GNU_SOURCE
#include "gateway/body.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

bool gw_content_type_is(const char *header, const char *want)
{
    if (!header)
        return false;
    while (*header == ' ' || *header == '\t')
        header++;
    size_t n = strlen(want);
    if (strncasecmp(header, want, n) != 0)
        return false;
    const char *rest = header + n;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    return *rest == '\0' || *rest == ';';
}

static bool type_ok(gw_ftype t, const json_t *v)
{
    switch (t) {
    case GW_T_STRING: return json_is_string(v);
    case GW_T_STRING_OR_NULL: return json_is_string(v) || json_is_null(v);
    case GW_T_INT: return json_is_integer(v);
    case GW_T_BOOL: return json_is_boolean(v);
    case GW_T_ARRAY: return json_is_array(v);
    case GW_T_OBJECT: return json_is_object(v);
    }
    return false;
}

static const char *type_name(gw_ftype t)
{
    switch (t) {
    case GW_T_STRING: return "a string";
    case GW_T_STRING_OR_NULL: return "a string or null";
    case GW_T_INT: return "an integer";
    case GW_T_BOOL: return "a boolean";
    case GW_T_ARRAY: return "an array";
    case GW_T_OBJECT: return "an object";
    }
    return "something else";
}

static json_t *fail(json_t *j, char *msg, size_t cap, const char *fmt, const char *a, const char *b)
{
    json_decref(j);
    snprintf(msg, cap, fmt, a, b);
    return NULL;
}

json_t *gw_body_json(const char *body, size_t len, const gw_field *fields, bool required, char *msg, size_t cap)
{
    if (len == 0 && required)
        return fail(NULL, msg, cap, "%s%s", "a JSON object body is required", "");
    if (memchr(body, '\0', len))
        return fail(NULL, msg, cap, "%s%s", "the body contains a NUL byte", "");
    json_error_t je;
    /* An optional body left out is {}, which must still have its required fields. */
    json_t *j = len == 0 ? json_object() : json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!j && len == 0)
        return fail(NULL, msg, cap, "%s%s", "out of memory", "");
    if (!j) {
        snprintf(msg, cap, "malformed JSON: %s (line %d)", je.text, je.line);
        return NULL;
    }
    if (!json_is_object(j))
        return fail(j, msg, cap, "%s%s", "the body must be a JSON object", "");
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
        const gw_field *f = fields;
        while (f->name && strcmp(f->name, k) != 0)
            f++;
        if (!f->name) {
            char name[68];
            snprintf(name, sizeof name, "%.64s", k);
            return fail(j, msg, cap, "unknown field \"%s\"%s", name, "");
        }
        if (!type_ok(f->type, v)) {
            if (f->why)
                return fail(j, msg, cap, "%s%s", f->why, "");
            return fail(j, msg, cap, "\"%s\" must be %s", f->name, type_name(f->type));
        }
    }
    for (const gw_field *f = fields; f->name; f++)
        if (f->required && !json_object_get(j, f->name)) {
            if (f->why)
                return fail(j, msg, cap, "%s%s", f->why, "");
            return fail(j, msg, cap, "\"%s\" is required%s", f->name, "");
        }
    return j;
}

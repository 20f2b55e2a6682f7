/*
 * fuzz_body.c - libFuzzer target for JSON request bodies checked against
 * a field list (src/gateway/body.h) and Content-Type matching.
 *
 * The first byte picks the field list (the real exec, key and user
 * schemas' shapes) and whether a body is required; the rest is the body.
 * Checks: an accepted body is an object holding only listed fields of
 * their declared types, with every required one; a refusal always says
 * why.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/body.h"

static const gw_field exec_like[] = {
    {"cmd", GW_T_ARRAY, true, "\"cmd\" must be a non-empty array"},
    {"stdin", GW_T_STRING, false, NULL},
    {"env", GW_T_OBJECT, false, NULL},
    {"timeout_s", GW_T_INT, false, NULL},
    {NULL, 0, false, NULL},
};
static const gw_field key_like[] = {
    {"name", GW_T_STRING, true, NULL},
    {"scopes", GW_T_ARRAY, false, NULL},
    {"expires_at", GW_T_STRING_OR_NULL, false, NULL},
    {"flag", GW_T_BOOL, false, NULL},
    {NULL, 0, false, NULL},
};
static const gw_field *const lists[] = {exec_like, key_like};

static int type_ok(gw_ftype t, const json_t *v)
{
    switch (t) {
    case GW_T_STRING: return json_is_string(v);
    case GW_T_STRING_OR_NULL: return json_is_string(v) || json_is_null(v);
    case GW_T_INT: return json_is_integer(v);
    case GW_T_BOOL: return json_is_boolean(v);
    case GW_T_ARRAY: return json_is_array(v);
    case GW_T_OBJECT: return json_is_object(v);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    const gw_field *fields = lists[data[0] & 1];
    int required = (data[0] >> 1) & 1;
    char msg[256] = "";
    json_t *j = gw_body_json((const char *)data + 1, size - 1, fields, required, msg, sizeof msg);
    if (!j) {
        if (!msg[0])
            abort();
    } else {
        if (!json_is_object(j))
            abort();
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            const gw_field *f = fields;
            while (f->name && strcmp(f->name, k) != 0)
                f++;
            if (!f->name || !type_ok(f->type, v))
                abort();
        }
        for (const gw_field *f = fields; f->name; f++)
            if (f->required && !json_object_get(j, f->name))
                abort();
        json_decref(j);
    }
    /* The same bytes as a Content-Type header. */
    char ct[128];
    size_t n = size - 1 < sizeof ct - 1 ? size - 1 : sizeof ct - 1;
    memcpy(ct, data + 1, n);
    ct[n] = '\0';
    (void)gw_content_type_is(ct, GW_MEDIA_JSON);
    return 0;
}

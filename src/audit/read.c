/*
 * read.c - reading the audit log out: fb_audit_query (JSON pages for the
 * API), fb_audit_export (JSON lines for a SIEM), and the UTF-8 cleaning
 * that both the stored fields and the output go through.
 *
 * Field text is stored as valid UTF-8 of at most FB_AUDIT_FIELD_MAX bytes:
 * the log is exported as JSON, which must be UTF-8, and an actor or reason
 * that came from a request must not be able to fill the disk.  Rows that
 * append wrote are clean already; a tampered one may hold anything, and is
 * shown as faithfully as JSON allows, capped at OUTPUT_FIELD_MAX per field.
 */
#include <stdlib.h>
#include <string.h>

#include "audit/chain.h"
#include "common/time.h"

#define OUTPUT_FIELD_MAX 65536

/* ---- text ------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if the
 * bytes there are not one (Unicode 15, table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return len;
}

char *fb_audit_utf8_clean(const char *in, size_t n, size_t cap, size_t *out_len)
{
    static const char repl[] = "\xEF\xBF\xBD";
    const size_t mark = sizeof FB_AUDIT_TRUNCATED - 1;
    /* Each input byte yields at most 3 output bytes (U+FFFD). */
    char *out = malloc((n > cap / 3 ? cap : 3 * n) + 1);
    if (!out)
        return NULL;
    const unsigned char *p = (const unsigned char *)in;
    size_t o = 0, cut = 0, i = 0;
    bool truncated = false;
    while (i < n) {
        size_t len = utf8_seq_len(p + i, n - i);
        const char *src = len ? in + i : repl;
        size_t olen = len ? len : sizeof repl - 1;
        if (olen > cap - o) {
            truncated = true;
            break;
        }
        memcpy(out + o, src, olen);
        o += olen;
        i += len ? len : 1;
        if (o + mark <= cap)
            cut = o;
    }
    if (truncated) {
        memcpy(out + cut, FB_AUDIT_TRUNCATED, mark);
        o = cut + mark;
    }
    out[o] = '\0';
    if (out_len)
        *out_len = o;
    return out;
}

/* ---- rows as JSON ------------------------------------------------------------ */

static int set_text(json_t *o, const char *name, const fb_audit_text *t)
{
    size_t len = 0;
    cleanup_free char *clean = fb_audit_utf8_clean(t->p, t->n, OUTPUT_FIELD_MAX, &len);
    json_t *v = clean ? json_stringn(clean, len) : NULL;
    return v ? json_object_set_new(o, name, v) : -1;
}

/* Appends a row to the JSON array ctx. */
static int row_json(const fb_audit_row *row, void *ctx, fb_err *err)
{
    json_t *o = json_object();
    if (!o || json_object_set_new(o, "seq", json_integer(row->seq)) < 0)
        goto fail;
    for (int i = 0; i < FB_AUDIT_NCOLS; i++)
        if (set_text(o, fb_audit_field_names[i], &row->col[i]) < 0)
            goto fail;
    if (json_array_append_new(ctx, o) < 0)
        return fb_fail(err, "out of memory");
    return 0;
fail:
    json_decref(o);
    return fb_fail(err, "out of memory");
}

/* ---- query and export ---------------------------------------------------------- */

int fb_audit_normalize_time(const char *in, char out[static 31], fb_err *err)
{
    struct timespec ts;
    char buf[FB_TIME_MAX];
    if (!in)
        return fb_fail(err, "missing timestamp");
    if (fb_time_parse_filter(in, &ts) < 0 || fb_time_format(&ts, buf) < 0)
        return fb_fail(err, "'%.40s' is not an RFC 3339 time (2026-11-29T10:31:07Z) or date (2026-11-29)", in);
    memcpy(out, buf, FB_TIME_TEXT_LEN + 1);
    return 0;
}

int fb_audit_query(fb_store *st, const fb_audit_filter *f, json_t **out, fb_err *err)
{
    static const fb_audit_filter none = {0};
    *out = NULL;
    if (!f)
        f = &none;
    char since[31], until[31];
    if (f->since && fb_audit_normalize_time(f->since, since, err) < 0)
        return fb_fail_prefix(err, "audit query: since");
    if (f->until && fb_audit_normalize_time(f->until, until, err) < 0)
        return fb_fail_prefix(err, "audit query: until");
    if (f->outcome && !fb_audit_valid_outcome(f->outcome))
        return fb_fail(err, "audit query: outcome must be allowed, denied or error");
    unsigned limit = f->limit == 0 ? FB_AUDIT_QUERY_DEFAULT : f->limit;
    if (limit > FB_AUDIT_QUERY_MAX)
        limit = FB_AUDIT_QUERY_MAX;
    json_t *arr = json_array();
    if (!arr)
        return fb_fail(err, "out of memory");
    fb_audit_match m = {f->event, f->actor, f->resource, f->action, f->outcome, f->since ? since : NULL,
                        f->until ? until : NULL};
    int64_t after = f->after_seq > INT64_MAX ? INT64_MAX : (int64_t)f->after_seq;
    if (fb_store_audit_query(st, &m, after, limit, row_json, arr, err) < 0) {
        json_decref(arr);
        return -1;
    }
    *out = arr;
    return 0;
}

int fb_audit_export(fb_store *st, FILE *out, fb_err *err)
{
    static const fb_audit_match all = {0};
    /* From the very bottom: a row a tamperer inserted with seq 0 or below
     * is exported too, for the SIEM to see. */
    int64_t after = INT64_MIN;
    for (;;) {
        json_t *arr = json_array();
        if (!arr)
            return fb_fail(err, "out of memory");
        /* One page under the lock, then written without it: a slow reader
         * of the export must not stall the appenders. */
        if (fb_store_audit_query(st, &all, after, FB_AUDIT_QUERY_MAX, row_json, arr, err) < 0) {
            json_decref(arr);
            return -1;
        }
        size_t n = json_array_size(arr), i;
        json_t *o;
        int rc = 0;
        json_array_foreach(arr, i, o)
        {
            cleanup_free char *line = json_dumps(o, JSON_COMPACT);
            if (!line) {
                rc = fb_fail(err, "out of memory");
                break;
            }
            if (fputs(line, out) == EOF || fputc('\n', out) == EOF) {
                rc = fb_fail_errno(err, "audit export: cannot write");
                break;
            }
            after = (int64_t)json_integer_value(json_object_get(o, "seq"));
        }
        json_decref(arr);
        if (rc < 0)
            return -1;
        if (n < FB_AUDIT_QUERY_MAX)
            break;
    }
    if (fflush(out) == EOF || ferror(out))
        return fb_fail_errno(err, "audit export: cannot write");
    return 0;
}

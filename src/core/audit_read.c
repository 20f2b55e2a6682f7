/*
 * audit_read.c - reading what spans every team: the audit log, its
 * verification, and the metrics (core.h).
 *
 * The log and the metrics are organisation-wide (every team's actions,
 * every team's sandbox counts and request statuses), and nobody reads
 * across teams unless an admin: each read takes an admin holding
 * audit:read (finding 12 of issue 6: /metrics used to need audit:read
 * only, which operators of any team hold).
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "audit/audit.h"
#include "core/internal.h"

int fb_core_audit_list(fb_core *c, fb_caller *caller, const fb_audit_query_args *q, json_t **out,
                       fb_core_err *err)
{
    if (fb_core_permit_admin(c, caller, FB_PERM_AUDIT_READ, "audit", "the audit log", err) < 0)
        return -1;
    fb_audit_filter f = {0};
    f.actor = q->actor;
    f.action = q->action;
    f.outcome = q->outcome;
    f.since = q->since;
    f.until = q->until;
    uint64_t v;
    if (q->limit) {
        if (fb_parse_u64(q->limit, 1, FB_AUDIT_QUERY_MAX, &v) < 0)
            return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"limit\" must be between 1 and %d", FB_AUDIT_QUERY_MAX);
        f.limit = (unsigned)v;
    }
    if (q->after_seq) {
        if (fb_parse_u64(q->after_seq, 0, UINT64_MAX >> 1, &v) < 0)
            return fb_core_fail(err, FB_CORE_BAD_REQUEST, "\"after_seq\" must be a non-negative integer");
        f.after_seq = v;
    }
    fb_err e = {{0}};
    if (fb_audit_query(c->store, &f, out, &e) < 0)
        return fb_core_fail(err, FB_CORE_BAD_REQUEST, "%s", e.msg);
    return 0;
}

int fb_core_audit_verify(fb_core *c, fb_caller *caller, json_t **out, fb_core_err *err)
{
    if (fb_core_permit_admin(c, caller, FB_PERM_AUDIT_READ, "audit", "the audit log", err) < 0)
        return -1;
    uint64_t entries = 0, bad = 0;
    fb_err e = {{0}};
    int r = fb_audit_verify(c->store, &entries, &bad, &e);
    json_t *o = json_pack("{s:b, s:I, s:s}", "intact", r == 0, "entries", (json_int_t)entries, "message",
                          r == 0 ? "audit chain intact" : e.msg);
    json_object_set_new(o, "first_bad_seq", r == 0 ? json_null() : json_integer((json_int_t)bad));
    *out = o;
    return 0;
}

int fb_core_metrics(fb_core *c, fb_caller *caller, char **text, fb_core_err *err)
{
    if (fb_core_permit_admin(c, caller, FB_PERM_AUDIT_READ, "metrics", "the metrics", err) < 0)
        return -1;
    *text = core_metrics_render(&c->reg);
    if (!*text)
        return fb_core_fail(err, FB_CORE_UNAVAILABLE, "out of memory");
    return 0;
}

/*
 * tasks.c - forwards the task repository (tasks.h) to the storage
 * engine's table (backend.h), and frees what it returns.  No logic lives
 * here: an engine implements each call whole.
 */
#include <stdlib.h>

#include "store/backend.h"
#include "store/tasks.h"

#define OPS(st) ((st)->engine->tasks)

void fb_task_record_clear(fb_task_record *r)
{
    char **texts[] = {&r->prompt, &r->system, &r->tools, &r->approvals, &r->network,
                      &r->limits, &r->usage,  &r->result, &r->error,    &r->conversation};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        free(*texts[i]);
        *texts[i] = NULL;
    }
}

void fb_task_records_free(fb_task_record *recs, size_t n)
{
    for (size_t i = 0; recs && i < n; i++)
        fb_task_record_clear(&recs[i]);
    free(recs);
}

void fb_task_approvals_free(fb_task_approval_record *a, size_t n)
{
    for (size_t i = 0; a && i < n; i++) {
        free(a[i].input);
        free(a[i].reason);
    }
    free(a);
}

int fb_store_task_insert(fb_store *st, const fb_task_record *r, fb_err *err)
{
    return OPS(st)->insert(st, r, err);
}

int fb_store_task_update(fb_store *st, const fb_task_record *r, fb_err *err)
{
    return OPS(st)->update(st, r, err);
}

int fb_store_task_get(fb_store *st, const char *id, fb_task_record *out, fb_err *err)
{
    return OPS(st)->get(st, id, out, err);
}

int fb_store_task_list(fb_store *st, const char *team_id, fb_task_record **out, size_t *n, fb_err *err)
{
    return OPS(st)->list(st, team_id, out, n, err);
}

int fb_store_task_list_unfinished(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err)
{
    return OPS(st)->list_unfinished(st, ids, n, err);
}

int fb_store_task_event_append(fb_store *st, const char *task_id, uint64_t seq, const char *type, const char *data,
                               const char *at, fb_err *err)
{
    return OPS(st)->event_append(st, task_id, seq, type, data, at, err);
}

int fb_store_task_events_append(fb_store *st, const fb_task_event_row *rows, size_t n, fb_err *err)
{
    return n ? OPS(st)->events_append(st, rows, n, err) : 0;
}

int fb_store_task_events(fb_store *st, const char *task_id, uint64_t after, unsigned limit, fb_task_event_fn each,
                         void *ctx, fb_err *err)
{
    return OPS(st)->events(st, task_id, after, limit, each, ctx, err);
}

int fb_store_task_event_last(fb_store *st, const char *task_id, uint64_t *seq, fb_err *err)
{
    return OPS(st)->event_last(st, task_id, seq, err);
}

int fb_store_task_approval_insert(fb_store *st, const fb_task_approval_record *a, fb_err *err)
{
    return OPS(st)->approval_insert(st, a, err);
}

int fb_store_task_approval_decide(fb_store *st, const char *task_id, const char *id, const char *state,
                                  const char *decided_by, const char *reason, const char *at, fb_err *err)
{
    return OPS(st)->approval_decide(st, task_id, id, state, decided_by, reason, at, err);
}

int fb_store_task_approval_list(fb_store *st, const char *task_id, fb_task_approval_record **out, size_t *n,
                                fb_err *err)
{
    return OPS(st)->approval_list(st, task_id, out, n, err);
}

int fb_store_task_approval_expire_all(fb_store *st, const char *task_id, const char *at, size_t *n, fb_err *err)
{
    return OPS(st)->approval_expire_all(st, task_id, at, n, err);
}

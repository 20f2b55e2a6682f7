/*
 * tasks.h - the task repository: the record of each task (who created it,
 * what it was given, its state, result and usage, and the conversation a
 * follow-up message continues), its numbered transcript events and the
 * approvals of its held tool calls (core.h, "tasks").
 *
 * The store keeps text: tool lists, the network grant, limits, usage and
 * the conversation are JSON texts the task service writes and reads; the
 * repository checks states and nothing else.  No secret is ever stored: a
 * task names its provider, never the provider's key.  Records belong to
 * the node that runs them (fb_store_node_id), like sandbox records, so
 * that a restarting gateway fails only what it was itself running.  Times
 * are canonical RFC 3339 (common/time.h); "" stands for NULL in the fixed
 * fields, NULL in the text ones.
 */
#ifndef FB_STORE_TASKS_H
#define FB_STORE_TASKS_H

#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "policy/policy.h"
#include "store/store.h"

#define FB_TASK_PROVIDER_MAX 72
#define FB_TASK_MODEL_MAX 256
#define FB_TASK_CALL_ID_MAX 256

typedef struct fb_task_record {
    char id[FB_ID_MAX];
    char team_id[FB_ID_MAX];
    char user_id[FB_ID_MAX];      /* the creator */
    char key_id[FB_ID_MAX];       /* "" when not created through a key */
    char provider[FB_TASK_PROVIDER_MAX];
    char model[FB_TASK_MODEL_MAX];
    char backend[8];
    char state[20];               /* queued, running, waiting_approval, succeeded, failed,
                                     cancelled, budget_exceeded */
    char sandbox_id[40];
    char created_at[40], started_at[40], finished_at[40];
    char *prompt;
    char *system;                 /* NULL: the default */
    char *tools, *approvals;      /* JSON arrays of tool names */
    char *network;                /* JSON {"allow": [...]} or NULL */
    char *limits, *usage;         /* JSON objects */
    char *result, *error;         /* NULL: none */
    char *conversation;           /* JSON; NULL when not read (lists) or not yet written */
} fb_task_record;

/* Frees the text fields (the record itself is the caller's). */
void fb_task_record_clear(fb_task_record *r);

/* Records a new task on this node (its state as given).  ENOTFOUND for an
 * unknown team or user, ECOLLISION if the id exists, EINVAL for a bad
 * state. */
int fb_store_task_insert(fb_store *st, const fb_task_record *r, fb_err *err);
/* Writes what changes while a task runs: state, sandbox_id, started_at,
 * finished_at, usage, result, error, and the conversation unless r's is
 * NULL.  ENOTFOUND if there is no such task. */
int fb_store_task_update(fb_store *st, const fb_task_record *r, fb_err *err);
/* The whole record (conversation included).  ENOTFOUND if absent. */
int fb_store_task_get(fb_store *st, const char *id, fb_task_record *out, fb_err *err);
/* team_id's tasks (NULL: every team's), newest first, without their
 * conversations: a malloc'd array (NULL when *n == 0) to free with
 * fb_task_records_free. */
int fb_store_task_list(fb_store *st, const char *team_id, fb_task_record **out, size_t *n, fb_err *err);
void fb_task_records_free(fb_task_record *recs, size_t n);
/* This node's tasks that have not ended (queued, running,
 * waiting_approval): ids in a malloc'd array (NULL when *n == 0). */
int fb_store_task_list_unfinished(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err);

/* ---- events -------------------------------------------------------------------- */

/* Appends event seq of a task.  ECOLLISION if that seq exists. */
int fb_store_task_event_append(fb_store *st, const char *task_id, uint64_t seq, const char *type,
                               const char *data, const char *at, fb_err *err);
/* One event row, for appending several in one transaction. */
typedef struct fb_task_event_row {
    const char *task_id;
    uint64_t seq;
    const char *type, *data, *at;
} fb_task_event_row;
/* Appends n rows in one transaction (one commit), all or nothing. */
int fb_store_task_events_append(fb_store *st, const fb_task_event_row *rows, size_t n, fb_err *err);
/* Calls each for the task's events after seq `after`, in order, at most
 * limit of them; each returning non-zero stops early. */
typedef int (*fb_task_event_fn)(void *ctx, uint64_t seq, const char *type, const char *data, const char *at);
int fb_store_task_events(fb_store *st, const char *task_id, uint64_t after, unsigned limit, fb_task_event_fn each,
                         void *ctx, fb_err *err);
/* The task's last sequence number (0: none). */
int fb_store_task_event_last(fb_store *st, const char *task_id, uint64_t *seq, fb_err *err);

/* ---- approvals ------------------------------------------------------------------------- */

typedef struct fb_task_approval_record {
    char id[FB_ID_MAX];
    char task_id[FB_ID_MAX];
    char call_id[FB_TASK_CALL_ID_MAX];
    char tool[24];
    char state[12];               /* pending, approved, denied, expired */
    char created_at[40], expires_at[40], decided_at[40];
    char decided_by[FB_ID_MAX];   /* the deciding user's id; "" when none */
    char *input;                  /* JSON text */
    char *reason;                 /* NULL: none */
} fb_task_approval_record;

void fb_task_approvals_free(fb_task_approval_record *a, size_t n);
/* Records a pending approval.  ECOLLISION if the id exists. */
int fb_store_task_approval_insert(fb_store *st, const fb_task_approval_record *a, fb_err *err);
/* Decides approval id of task_id: state approved, denied or expired, with
 * decided_at, decided_by ("" none) and reason (NULL none).  ENOTFOUND when
 * the task has no such approval, ECONFLICT when it is no longer pending. */
int fb_store_task_approval_decide(fb_store *st, const char *task_id, const char *id, const char *state,
                                  const char *decided_by, const char *reason, const char *at, fb_err *err);
/* The task's approvals, oldest first (malloc'd, NULL when *n == 0). */
int fb_store_task_approval_list(fb_store *st, const char *task_id, fb_task_approval_record **out, size_t *n,
                                fb_err *err);
/* Every pending approval of the task becomes expired at `at`; *n how many. */
int fb_store_task_approval_expire_all(fb_store *st, const char *task_id, const char *at, size_t *n, fb_err *err);

#endif

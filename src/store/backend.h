/*
 * backend.h - private to src/store: the table of operations an fb_store
 * dispatches through, one sub-table per repository, and the struct behind
 * the opaque fb_store.
 *
 * A storage engine fills the tables with functions of the same
 * signatures as the public repository calls (store/identity.h,
 * store/sandboxes.h, store/audit_log.h, store/tasks.h, store/sessions.h,
 * store/nodes.h); store.c, identity.c
 * and tasks.c only forward.  Two engines fill them: SQLite (sqlite_*.c)
 * and PostgreSQL (pg_store.c, pg_sql.c, and the same SQL repositories
 * compiled with pg_names.h); fb_store_open_url picks one from the store
 * URL.
 */
#ifndef FB_STORE_BACKEND_H
#define FB_STORE_BACKEND_H

#include <pthread.h>
#include <stdbool.h>

#include "store/audit_log.h"
#include "store/identity.h"
#include "store/nodes.h"
#include "store/sandboxes.h"
#include "store/sessions.h"
#include "store/store.h"
#include "store/tasks.h"

typedef struct fb_identity_ops {
    int (*org_get)(fb_store *, bool *, char *, fb_err *);
    int (*bootstrap)(fb_store *, const fb_identity_bootstrap *, fb_err *);
    int (*team_insert)(fb_store *, const fb_team *, fb_err *);
    int (*team_get)(fb_store *, const char *, bool by_name, fb_team *, fb_err *);
    int (*team_list)(fb_store *, fb_team **, size_t *, fb_err *);
    int (*user_insert)(fb_store *, const fb_user *, const char *, fb_err *);
    int (*user_get)(fb_store *, const char *, bool by_name, fb_user *, char *pwhash, fb_err *);
    int (*user_list)(fb_store *, const char *, fb_user **, size_t *, fb_err *);
    int (*user_set_disabled)(fb_store *, const char *, bool, fb_err *);
    int (*user_set_password)(fb_store *, const char *, const char *, fb_err *);
    int (*key_insert)(fb_store *, const fb_key_record *, fb_role, fb_err *);
    int (*key_get)(fb_store *, const char *, fb_api_key_info *, fb_err *);
    int (*key_auth_row)(fb_store *, const char *, fb_key_auth_row *, fb_err *);
    int (*key_list)(fb_store *, const char *, fb_api_key_info **, size_t *, fb_err *);
    int (*key_touch)(fb_store *, const char *, const char *, fb_err *);
    int (*key_revoke_tree)(fb_store *, const char *, const char *, char (**)[FB_ID_MAX], size_t *, fb_err *);
} fb_identity_ops;

typedef struct fb_sandbox_ops {
    int (*insert)(fb_store *, const fb_sandbox_record *, fb_err *);
    int (*set_state)(fb_store *, const char *, const char *, bool local, fb_err *);
    int (*list_live)(fb_store *, char (**)[FB_ID_MAX], size_t *, fb_err *);
    int (*reserve)(fb_store *, const fb_sandbox_record *, const char *, const fb_quota_limits *, char *, size_t,
                   fb_err *);
    int (*get)(fb_store *, const char *, fb_sandbox_row *, fb_err *);
    int (*list_all_live)(fb_store *, const char *, fb_sandbox_row **, size_t *, fb_err *);
    int (*set_expiry)(fb_store *, const char *, const char *, fb_err *);
    int (*activate)(fb_store *, const char *, const char *, const char *, const char *, fb_err *);
} fb_sandbox_ops;

typedef struct fb_node_ops {
    int (*reg)(fb_store *, const fb_node_record *, char (**)[FB_ID_MAX], size_t *, fb_err *);
    int (*heartbeat)(fb_store *, const char *, bool *, fb_err *);
    int (*stop)(fb_store *, const char *, fb_err *);
    int (*list)(fb_store *, fb_node_record **, size_t *, fb_err *);
    int (*get)(fb_store *, const char *, fb_node_record *, fb_err *);
    int (*expire)(fb_store *, uint64_t, size_t *, char (**)[FB_ID_MAX], size_t *, fb_err *);
} fb_node_ops;

/* One entry of a group commit: the chain callback and its context. */
typedef struct fb_audit_append_item {
    fb_audit_chain_fn chain;
    void *ctx;
} fb_audit_append_item;

typedef struct fb_task_ops {
    int (*insert)(fb_store *, const fb_task_record *, fb_err *);
    int (*update)(fb_store *, const fb_task_record *, fb_err *);
    int (*get)(fb_store *, const char *, fb_task_record *, fb_err *);
    int (*list)(fb_store *, const char *, fb_task_record **, size_t *, fb_err *);
    int (*list_unfinished)(fb_store *, char (**)[FB_ID_MAX], size_t *, fb_err *);
    int (*event_append)(fb_store *, const char *, uint64_t, const char *, const char *, const char *, fb_err *);
    int (*events_append)(fb_store *, const fb_task_event_row *, size_t, fb_err *);
    int (*events)(fb_store *, const char *, uint64_t, unsigned, fb_task_event_fn, void *, fb_err *);
    int (*event_last)(fb_store *, const char *, uint64_t *, fb_err *);
    int (*approval_insert)(fb_store *, const fb_task_approval_record *, fb_err *);
    int (*approval_decide)(fb_store *, const char *, const char *, const char *, const char *, const char *,
                           const char *, fb_err *);
    int (*approval_list)(fb_store *, const char *, fb_task_approval_record **, size_t *, fb_err *);
    int (*approval_expire_all)(fb_store *, const char *, const char *, size_t *, fb_err *);
} fb_task_ops;

typedef struct fb_session_ops {
    int (*insert)(fb_store *, const fb_session_record *, unsigned, fb_session_end **, size_t *, fb_err *);
    int (*get)(fb_store *, const uint8_t *, fb_session_record *, fb_err *);
    int (*del)(fb_store *, const char *, fb_err *);
    int (*expire)(fb_store *, const char *, fb_session_end **, size_t *, fb_err *);
} fb_session_ops;

typedef struct fb_audit_ops {
    /* Appends n entries in order in one transaction (one durable commit):
     * all or nothing. */
    int (*append_batch)(fb_store *, const fb_audit_append_item *, size_t, fb_err *);
    int (*ends)(fb_store *, fb_audit_head *, fb_audit_tail *, fb_err *);
    int (*page)(fb_store *, int64_t, unsigned, fb_audit_head *, fb_audit_row_fn, void *, size_t *, fb_err *);
    int (*query)(fb_store *, const fb_audit_match *, int64_t, unsigned, fb_audit_row_fn, void *, fb_err *);
} fb_audit_ops;

typedef struct fb_store_engine {
    const char *name;
    int (*open)(fb_store *st, const char *state_dir, fb_err *err); /* sets st->impl */
    void (*close)(fb_store *st);
    int (*schema_version)(fb_store *st);
    int (*watch_identity)(fb_store *st, fb_store_watch_fn fn, void *ctx, fb_err *err);
    int (*preallocate_log)(fb_store *st, fb_err *err); /* NULL: nothing to do */
    const fb_identity_ops *identity;
    const fb_sandbox_ops *sandboxes;
    const fb_audit_ops *audit;
    const fb_task_ops *tasks;
    const fb_session_ops *sessions;
    const fb_node_ops *nodes;
} fb_store_engine;

struct audit_waiter;

struct fb_store {
    const fb_store_engine *engine;
    void *impl; /* the engine's connection state */
    char *state_dir;
    char *url; /* the store URL the engine connects to (PostgreSQL), or NULL */
    char node_id[FB_STORE_NODE_ID_MAX];
    /* The audit group commit (audit_batch.c): appends waiting for the
     * next commit, and whether one is being written. */
    pthread_mutex_t audit_mu;
    struct audit_waiter *audit_queue, **audit_queue_tail;
    bool audit_leader;
    struct fb_pg_listener *listener; /* fb_store_watch_identity on PostgreSQL (pg_listen.c) */
};

/* The channel identity changes are announced on (fb_sql_notify). */
#define FB_STORE_IDENTITY_CHANNEL "forgebox_identity"

/* pg_listen.c: a thread with a connection of its own LISTENing on channel,
 * calling fn as fb_store_watch_identity says; reconnects until stopped. */
struct fb_pg_listener;
int fb_pg_listen_start(const char *url, const char *channel, fb_store_watch_fn fn, void *ctx,
                       struct fb_pg_listener **out, fb_err *err);
void fb_pg_listen_stop(struct fb_pg_listener *l);

/* The SQLite engine (sqlite_store.c). */
extern const fb_store_engine fb_sqlite_engine;
extern const fb_identity_ops fb_sqlite_identity_ops;
extern const fb_sandbox_ops fb_sqlite_sandbox_ops;
extern const fb_audit_ops fb_sqlite_audit_ops;
extern const fb_task_ops fb_sqlite_task_ops;
extern const fb_session_ops fb_sqlite_session_ops;
extern const fb_node_ops fb_sqlite_node_ops;

/* The PostgreSQL engine (pg_store.c); its repository tables are the SQL
 * repositories compiled with pg_names.h. */
extern const fb_store_engine fb_pg_engine;
extern const fb_identity_ops fb_pg_identity_ops;
extern const fb_sandbox_ops fb_pg_sandbox_ops;
extern const fb_audit_ops fb_pg_audit_ops;
extern const fb_task_ops fb_pg_task_ops;
extern const fb_session_ops fb_pg_session_ops;
extern const fb_node_ops fb_pg_node_ops;

#endif

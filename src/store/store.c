/*
 * store.c - what every storage engine shares: the state directory's
 * checks, the node id, and forwarding the sandbox, node and audit
 * repository calls to the engine's tables (identity.c forwards the identity calls).
 *
 * The state directory is created 0700 and refused if another user could
 * write it: it holds the database, the pepper and the audit key.
 *
 * The node id is a file beside the database rather than a row in it: a
 * store may be shared by several gateways (PostgreSQL), but each node has
 * its own state directory, and the id must tell the nodes apart.
 */
#define _GNU_SOURCE
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/backend.h"

#define NODE_FILE "node.id"
#define NODE_PREFIX "nd_"
#define NODE_HEX 16

const char *fb_store_status_name(int status)
{
    switch (status) {
    case FB_STORE_OK: return "ok";
    case FB_STORE_EIO: return "io";
    case FB_STORE_ENOTFOUND: return "not_found";
    case FB_STORE_EEXISTS: return "exists";
    case FB_STORE_ECOLLISION: return "collision";
    case FB_STORE_ECONFLICT: return "conflict";
    case FB_STORE_EBUSY: return "busy";
    case FB_STORE_ECORRUPT: return "corrupt";
    case FB_STORE_ENOMEM: return "no_memory";
    case FB_STORE_ELIMIT: return "limit";
    case FB_STORE_EINVAL: return "invalid";
    default: return "unknown";
    }
}

/* Creates the state directory if needed and refuses one that another user
 * could write into (and so replace the database or the audit key). */
static int prepare_state_dir(const char *dir, fb_err *err)
{
    if (fb_mkdir_p(dir, 0700, err) < 0)
        return fb_fail_prefix(err, "state directory");
    struct stat sb;
    if (stat(dir, &sb) < 0)
        return fb_fail_errno(err, "cannot stat state directory %s", dir);
    if (!S_ISDIR(sb.st_mode))
        return fb_fail(err, "state directory %s is not a directory", dir);
    if (sb.st_uid != geteuid())
        return fb_fail(err, "state directory %s belongs to uid %u, not to this user (uid %u); run forgebox as its owner",
                       dir, (unsigned)sb.st_uid, (unsigned)geteuid());
    if (sb.st_mode & 022)
        return fb_fail(err, "state directory %s is writable by group or others (mode %04o); run chmod go-w %s", dir,
                       (unsigned)(sb.st_mode & 07777), dir);
    return 0;
}

static bool valid_node_id(const char *s, size_t n)
{
    if (n != strlen(NODE_PREFIX) + NODE_HEX || memcmp(s, NODE_PREFIX, strlen(NODE_PREFIX)) != 0)
        return false;
    for (size_t i = strlen(NODE_PREFIX); i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Reads STATE_DIR/node.id, creating it on first use. */
static int load_node_id(const char *dir, char out[FB_STORE_NODE_ID_MAX], fb_err *err)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, NODE_FILE) >= (int)sizeof path)
        return fb_fail(err, "state directory path too long");
    for (int attempt = 0; attempt < 2; attempt++) {
        cleanup_fd int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0) {
            char buf[FB_STORE_NODE_ID_MAX + 1];
            size_t n = 0;
            if (fb_read_up_to(fd, buf, sizeof buf, &n) < 0)
                return fb_fail_errno(err, "cannot read %s", path);
            if (!valid_node_id(buf, n))
                return fb_fail(err, "%s does not hold a node id (nd_ and 16 hex digits); restore it or remove it to "
                                    "make this a new node",
                               path);
            memcpy(out, buf, n);
            out[n] = '\0';
            return 0;
        }
        if (errno != ENOENT)
            return fb_fail_errno(err, "cannot open %s", path);
        uint8_t b[NODE_HEX / 2];
        char id[FB_STORE_NODE_ID_MAX];
        if (fb_random_bytes(b, sizeof b) < 0)
            return fb_fail_errno(err, "cannot read random bytes");
        memcpy(id, NODE_PREFIX, strlen(NODE_PREFIX));
        fb_hex(b, sizeof b, id + strlen(NODE_PREFIX));
        if (fb_create_file_once(path, id, strlen(id), err) < 0)
            return -1;
    }
    return fb_fail(err, "%s vanished while being created", path);
}

/* A sqlite:// URL may only name the database the state directory holds:
 * the SQLite engine keeps its database beside the node id and the keys. */
static int check_sqlite_url(const char *state_dir, const char *path, fb_err *err)
{
    if (!*path)
        return 0;
    const char *slash = strrchr(path, '/');
    cleanup_free char *want = realpath(state_dir, NULL);
    cleanup_free char *dir = slash && slash > path ? strndup(path, (size_t)(slash - path)) : NULL;
    cleanup_free char *got = dir ? realpath(dir, NULL) : NULL;
    if (path[0] != '/' || !slash || strcmp(slash + 1, "forgebox.db") != 0 || !want || !got || strcmp(want, got) != 0)
        return fb_fail(err, "store URL sqlite://%s: a SQLite store is STATE_DIR/forgebox.db (here %s/forgebox.db); "
                            "set the state directory instead",
                       path, state_dir);
    return 0;
}

/* The engine a store URL names (NULL or "" is SQLite). */
static const fb_store_engine *engine_for(const char *state_dir, const char *url, fb_err *err)
{
    if (!url || !*url)
        return &fb_sqlite_engine;
    if (strncmp(url, "sqlite://", 9) == 0)
        return check_sqlite_url(state_dir, url + 9, err) < 0 ? NULL : &fb_sqlite_engine;
    if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
        return &fb_pg_engine;
    fb_fail(err, "store URL: unknown scheme (expected sqlite:// or postgresql://)");
    return NULL;
}

static void free_url(char *url)
{
    if (url) {
        explicit_bzero(url, strlen(url)); /* it may carry the database password */
        free(url);
    }
}

int fb_store_open(const char *state_dir, fb_store **out, fb_err *err)
{
    return fb_store_open_url(state_dir, NULL, out, err);
}

int fb_store_open_url(const char *state_dir, const char *url, fb_store **out, fb_err *err)
{
    *out = NULL;
    if (!state_dir || !*state_dir)
        return fb_fail(err, "no state directory given");
    if (prepare_state_dir(state_dir, err) < 0)
        return -1;
    const fb_store_engine *engine = engine_for(state_dir, url, err);
    if (!engine)
        return -1;
    fb_store *st = calloc(1, sizeof *st);
    if (!st || !(st->state_dir = strdup(state_dir)) || (url && !(st->url = strdup(url)))) {
        if (st)
            free(st->state_dir);
        free(st);
        return fb_fail(err, "out of memory");
    }
    st->engine = engine;
    pthread_mutex_init(&st->audit_mu, NULL);
    st->audit_queue_tail = &st->audit_queue;
    if (load_node_id(state_dir, st->node_id, err) < 0 || st->engine->open(st, state_dir, err) < 0) {
        pthread_mutex_destroy(&st->audit_mu);
        free_url(st->url);
        free(st->state_dir);
        free(st);
        return -1;
    }
    *out = st;
    return 0;
}

void fb_store_close(fb_store *st)
{
    if (!st)
        return;
    st->engine->close(st);
    pthread_mutex_destroy(&st->audit_mu);
    free_url(st->url);
    free(st->state_dir);
    free(st);
}

int fb_store_preallocate_log(fb_store *st, fb_err *err)
{
    return st->engine->preallocate_log ? st->engine->preallocate_log(st, err) : 0;
}

const char *fb_store_engine_name(const fb_store *st)
{
    return st->engine->name;
}

int fb_store_watch_identity(fb_store *st, fb_store_watch_fn fn, void *ctx, fb_err *err)
{
    if (!fn)
        return fb_fail_code(err, FB_STORE_EINVAL, "no function to call on identity changes");
    return st->engine->watch_identity(st, fn, ctx, err);
}

int fb_store_schema_version(fb_store *st)
{
    return st->engine->schema_version(st);
}

const char *fb_store_state_dir(const fb_store *st)
{
    return st->state_dir;
}

const char *fb_store_node_id(const fb_store *st)
{
    return st->node_id;
}

/* ---- sandbox records ---------------------------------------------------------- */

int fb_store_sandbox_insert(fb_store *st, const fb_sandbox_record *r, fb_err *err)
{
    return st->engine->sandboxes->insert(st, r, err);
}

int fb_store_sandbox_set_state(fb_store *st, const char *id, const char *state, fb_err *err)
{
    return st->engine->sandboxes->set_state(st, id, state, false, err);
}

int fb_store_sandbox_set_state_local(fb_store *st, const char *id, const char *state, fb_err *err)
{
    return st->engine->sandboxes->set_state(st, id, state, true, err);
}

int fb_store_sandbox_list_live(fb_store *st, char (**ids)[FB_ID_MAX], size_t *n, fb_err *err)
{
    return st->engine->sandboxes->list_live(st, ids, n, err);
}

int fb_store_sandbox_reserve(fb_store *st, const fb_sandbox_record *r, const char *node_id,
                             const fb_quota_limits *lim, char *reason, size_t reason_cap, fb_err *err)
{
    return st->engine->sandboxes->reserve(st, r, node_id, lim, reason, reason_cap, err);
}

int fb_store_sandbox_get(fb_store *st, const char *id, fb_sandbox_row *out, fb_err *err)
{
    return st->engine->sandboxes->get(st, id, out, err);
}

int fb_store_sandbox_list_all_live(fb_store *st, const char *team_id, fb_sandbox_row **out, size_t *n,
                                   fb_err *err)
{
    return st->engine->sandboxes->list_all_live(st, team_id, out, n, err);
}

int fb_store_sandbox_set_expiry(fb_store *st, const char *id, const char *expires_at, fb_err *err)
{
    return st->engine->sandboxes->set_expiry(st, id, expires_at, err);
}

int fb_store_sandbox_activate(fb_store *st, const char *reserved_id, const char *id, const char *created_at,
                              const char *expires_at, fb_err *err)
{
    return st->engine->sandboxes->activate(st, reserved_id, id, created_at, expires_at, err);
}

/* ---- nodes -------------------------------------------------------------------------- */

int fb_store_node_register(fb_store *st, const fb_node_record *r, char (**lost)[FB_ID_MAX], size_t *nlost,
                           fb_err *err)
{
    return st->engine->nodes->reg(st, r, lost, nlost, err);
}

int fb_store_node_heartbeat(fb_store *st, const char *node_id, bool *still_up, fb_err *err)
{
    return st->engine->nodes->heartbeat(st, node_id, still_up, err);
}

int fb_store_node_stop(fb_store *st, const char *node_id, fb_err *err)
{
    return st->engine->nodes->stop(st, node_id, err);
}

int fb_store_node_list(fb_store *st, fb_node_record **out, size_t *n, fb_err *err)
{
    return st->engine->nodes->list(st, out, n, err);
}

int fb_store_node_get(fb_store *st, const char *node_id, fb_node_record *out, fb_err *err)
{
    return st->engine->nodes->get(st, node_id, out, err);
}

int fb_store_nodes_expire(fb_store *st, uint64_t down_after_s, size_t *nodes_down, char (**lost)[FB_ID_MAX],
                          size_t *nlost, fb_err *err)
{
    return st->engine->nodes->expire(st, down_after_s, nodes_down, lost, nlost, err);
}

/* ---- audit rows ----------------------------------------------------------------- */

int fb_store_audit_ends(fb_store *st, fb_audit_head *head, fb_audit_tail *tail, fb_err *err)
{
    return st->engine->audit->ends(st, head, tail, err);
}

int fb_store_audit_page(fb_store *st, int64_t from, unsigned limit, fb_audit_head *head, fb_audit_row_fn each,
                        void *ctx, size_t *rows, fb_err *err)
{
    return st->engine->audit->page(st, from, limit, head, each, ctx, rows, err);
}

int fb_store_audit_query(fb_store *st, const fb_audit_match *m, int64_t after, unsigned limit, fb_audit_row_fn each,
                         void *ctx, fb_err *err)
{
    return st->engine->audit->query(st, m, after, limit, each, ctx, err);
}

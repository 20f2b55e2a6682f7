/*
 * boxes.c - what the E2B API keeps per sandbox that ForgeBox itself does
 * not (internal.h): the envd access token, the template name, metadata and
 * envVars given at create, E2B's numeric pids for the commands started
 * through envd, and the code interpreter's contexts.
 *
 * The sandbox itself stays the service's: this table never decides a
 * permission nor keeps a sandbox alive.  An entry only remembers who
 * created the sandbox (the key envd requests act for: E2B's SDKs send
 * the access token there, not the API key; the key is checked as it
 * stands at each request) and holds one attached handle
 * per command, so a background command outlives the request that started
 * it (a streamed exec without readers would be cancelled) until it ends
 * or the sandbox goes; an ended command nobody reads is forgotten, as envd
 * forgets it.  Entries go when the sandbox is killed through this API,
 * when a request finds the sandbox gone, or past the sandbox's TTL; the
 * table is bounded.
 *
 * Locking: the table lock guards the table and each entry's reference
 * count; an entry's own lock guards its processes and contexts.  Exec
 * handles are used outside both, under a process reference.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "common/time.h"

#include "compat/e2b/internal.h"

struct e2b_box {
    char id[32];
    char token[E2B_TOKEN_LEN + 1];
    char key_id[FB_ID_MAX];     /* the key envd requests act for */
    time_t expires;             /* the sandbox's end by its TTL (under the table lock) */
    char template_id[64];
    json_t *metadata, *env_vars;
    pthread_mutex_t lock;
    e2b_proc *procs[E2B_MAX_PROCS];
    size_t nprocs;
    uint32_t next_pid;
    struct {
        char id[64];
        e2b_proc *server;
    } ctx[E2B_MAX_CTX];
    size_t nctx;
    bool repl_shipped;
    int refs;  /* the table's and each user's (under the table lock) */
};

struct e2b_boxes {
    pthread_mutex_t lock;
    e2b_box *items[E2B_MAX_BOXES];
    size_t n;
};

e2b_boxes *e2b_boxes_new(void)
{
    e2b_boxes *b = calloc(1, sizeof *b);
    if (b)
        pthread_mutex_init(&b->lock, NULL);
    return b;
}

static void proc_free(e2b_proc *p)
{
    fb_core_exec_release(p->x);
    json_decref(p->config);
    free(p);
}

/* Drops the box's hold on p (box lock held); freed by the last put. */
static bool proc_drop_locked(e2b_proc *p)
{
    p->dropped = true;
    return --p->refs == 0;
}

static void box_free(e2b_box *box)
{
    for (size_t i = 0; i < box->nprocs; i++)
        if (proc_drop_locked(box->procs[i]))
            proc_free(box->procs[i]);
    for (size_t i = 0; i < box->nctx; i++)
        if (box->ctx[i].server && proc_drop_locked(box->ctx[i].server))
            proc_free(box->ctx[i].server);
    json_decref(box->metadata);
    json_decref(box->env_vars);
    pthread_mutex_destroy(&box->lock);
    sodium_memzero(box->token, sizeof box->token);
    free(box);
}

void e2b_boxes_free(e2b_boxes *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++)
        if (--b->items[i]->refs == 0)
            box_free(b->items[i]);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

static json_t *object_or_empty(json_t *j)
{
    return json_is_object(j) ? json_deep_copy(j) : json_object();
}

/* A sandbox's end as its TTL says (far away if unreadable: kept). */
static time_t expiry_of(const char *expires_at)
{
    struct timespec t;
    return fb_time_parse(expires_at, &t) == 0 ? t.tv_sec : (time_t)1 << 40;
}

/* Entries of sandboxes past their TTL (the reaper has ended them; one
 * deleted through /v1 goes at its TTL too) leave the table, so that the
 * handles they hold do not outlive their sandbox by long (table lock held;
 * returns how many went into gone[]). */
static size_t sweep_locked(e2b_boxes *b, e2b_box **gone, size_t max)
{
    time_t now = fb_time_now_ts().tv_sec;
    size_t n = 0;
    for (size_t i = 0; i < b->n && n < max;)
        if (b->items[i]->expires + 5 < now) {
            gone[n++] = b->items[i];
            b->items[i] = b->items[--b->n];
        } else {
            i++;
        }
    return n;
}

void e2b_box_set_expiry(e2b_boxes *b, const char *id, const char *expires_at)
{
    time_t t = expiry_of(expires_at);
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->items[i]->id, id) == 0)
            b->items[i]->expires = t;
    pthread_mutex_unlock(&b->lock);
}

int e2b_box_add(e2b_boxes *b, const fb_sandbox_info *info, const fb_caller *caller, const char *template_id,
                json_t *metadata, json_t *env_vars, char token_out[E2B_TOKEN_LEN + 1])
{
    e2b_box *box = calloc(1, sizeof *box);
    if (!box)
        return -1;
    snprintf(box->id, sizeof box->id, "%s", info->id);
    uint8_t raw[E2B_TOKEN_LEN / 2];
    fb_random_bytes(raw, sizeof raw);
    fb_hex(raw, sizeof raw, box->token);
    sodium_memzero(raw, sizeof raw);
    snprintf(box->key_id, sizeof box->key_id, "%s", caller->who.key_id);
    box->expires = expiry_of(info->expires_at);
    snprintf(box->template_id, sizeof box->template_id, "%s", template_id);
    box->metadata = object_or_empty(metadata);
    box->env_vars = object_or_empty(env_vars);
    pthread_mutex_init(&box->lock, NULL);
    box->refs = 1;
    e2b_box *gone[64];
    pthread_mutex_lock(&b->lock);
    size_t ngone = sweep_locked(b, gone, sizeof gone / sizeof gone[0]);
    bool full = b->n == E2B_MAX_BOXES;
    if (!full) {
        b->items[b->n++] = box;
        memcpy(token_out, box->token, E2B_TOKEN_LEN + 1);
    }
    pthread_mutex_unlock(&b->lock);
    for (size_t i = 0; i < ngone; i++)
        e2b_box_put(b, gone[i]);
    if (full) {
        box_free(box);
        return -1;
    }
    return 0;
}

e2b_box *e2b_box_get(e2b_boxes *b, const char *id)
{
    e2b_box *found = NULL;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; id && i < b->n; i++)
        if (strcmp(b->items[i]->id, id) == 0) {
            found = b->items[i];
            found->refs++;
            break;
        }
    pthread_mutex_unlock(&b->lock);
    return found;
}

void e2b_box_put(e2b_boxes *b, e2b_box *box)
{
    if (!box)
        return;
    pthread_mutex_lock(&b->lock);
    bool last = --box->refs == 0;
    pthread_mutex_unlock(&b->lock);
    if (last)
        box_free(box);
}

void e2b_box_forget(e2b_boxes *b, const char *id)
{
    e2b_box *gone = NULL;
    pthread_mutex_lock(&b->lock);
    for (size_t i = 0; i < b->n; i++)
        if (strcmp(b->items[i]->id, id) == 0) {
            gone = b->items[i];
            b->items[i] = b->items[--b->n];
            break;
        }
    pthread_mutex_unlock(&b->lock);
    e2b_box_put(b, gone);
}

bool e2b_box_token_ok(const e2b_box *box, const char *token)
{
    return token && strlen(token) == E2B_TOKEN_LEN && sodium_memcmp(token, box->token, E2B_TOKEN_LEN) == 0;
}

const char *e2b_box_id(const e2b_box *box) { return box->id; }
const char *e2b_box_token(const e2b_box *box) { return box->token; }
const char *e2b_box_template(const e2b_box *box) { return box->template_id; }

json_t *e2b_box_metadata(const e2b_box *box)
{
    return json_deep_copy(box->metadata);
}

json_t *e2b_box_env_vars(const e2b_box *box)
{
    return json_deep_copy(box->env_vars);
}

const char *e2b_box_key_id(const e2b_box *box)
{
    return box->key_id;
}

json_t *e2b_boxes_metadata_of(e2b_boxes *b, const char *id, char *template_out, size_t cap)
{
    e2b_box *box = e2b_box_get(b, id);
    snprintf(template_out, cap, "%s", box ? box->template_id : "base");
    json_t *m = box ? e2b_box_metadata(box) : json_object();
    e2b_box_put(b, box);
    return m;
}

/* ---- processes ----------------------------------------------------------------------- */

e2b_proc *e2b_proc_add(e2b_box *box, fb_core_exec *x, json_t *config, const char *tag)
{
    e2b_proc *p = calloc(1, sizeof *p);
    if (!p) {
        json_decref(config);
        return NULL;
    }
    p->x = x;
    p->config = config;
    snprintf(p->exec_id, sizeof p->exec_id, "%s", fb_core_exec_id(x));
    snprintf(p->tag, sizeof p->tag, "%s", tag ? tag : "");
    p->refs = 2; /* the box's and the caller's */
    /* Like envd, forget commands that have ended and that nobody reads
     * any more (their logs are the service's to keep or let go). */
    e2b_proc *ended[E2B_MAX_PROCS];
    size_t nended = 0;
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->nprocs;) {
        e2b_proc *old = box->procs[i];
        if (old->refs == 1 && fb_core_exec_wait(old->x, 0)) {
            memmove(&box->procs[i], &box->procs[i + 1], (box->nprocs - i - 1) * sizeof box->procs[0]);
            box->nprocs--;
            if (proc_drop_locked(old))
                ended[nended++] = old;
        } else {
            i++;
        }
    }
    if (box->nprocs == E2B_MAX_PROCS) {
        pthread_mutex_unlock(&box->lock);
        for (size_t i = 0; i < nended; i++)
            proc_free(ended[i]);
        p->x = NULL; /* still the caller's */
        json_decref(p->config);
        free(p);
        return NULL;
    }
    p->pid = ++box->next_pid;
    box->procs[box->nprocs++] = p;
    pthread_mutex_unlock(&box->lock);
    for (size_t i = 0; i < nended; i++)
        proc_free(ended[i]);
    return p;
}

e2b_proc *e2b_proc_find(e2b_box *box, uint32_t pid, const char *tag)
{
    e2b_proc *found = NULL;
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->nprocs; i++) {
        e2b_proc *p = box->procs[i];
        if ((tag && tag[0] && strcmp(p->tag, tag) == 0) || (!(tag && tag[0]) && p->pid == pid)) {
            found = p;
            found->refs++;
            break;
        }
    }
    pthread_mutex_unlock(&box->lock);
    return found;
}

void e2b_proc_put(e2b_box *box, e2b_proc *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&box->lock);
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&box->lock);
    if (last)
        proc_free(p);
}

json_t *e2b_proc_list(e2b_box *box)
{
    json_t *arr = json_array();
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->nprocs; i++) {
        e2b_proc *p = box->procs[i];
        if (fb_core_exec_wait(p->x, 0))
            continue;
        json_t *o = json_pack("{s:O, s:i}", "config", p->config, "pid", (json_int_t)p->pid);
        if (p->tag[0])
            json_object_set_new(o, "tag", json_string(p->tag));
        json_array_append_new(arr, o);
    }
    pthread_mutex_unlock(&box->lock);
    return json_pack("{s:o}", "processes", arr);
}

/* ---- code interpreter contexts ------------------------------------------------------------ */

e2b_proc *e2b_ctx_server(e2b_box *box, const char *ctx)
{
    e2b_proc *p = NULL;
    pthread_mutex_lock(&box->lock);
    for (size_t i = 0; i < box->nctx; i++)
        if (strcmp(box->ctx[i].id, ctx) == 0 && box->ctx[i].server) {
            p = box->ctx[i].server;
            p->refs++;
        }
    pthread_mutex_unlock(&box->lock);
    return p;
}

int e2b_ctx_set_server(e2b_box *box, const char *ctx, fb_core_exec *x)
{
    e2b_proc *p = calloc(1, sizeof *p);
    if (!p)
        return -1;
    p->x = x;
    p->refs = 1;
    e2b_proc *old = NULL;
    int rc = 0;
    pthread_mutex_lock(&box->lock);
    size_t i = 0;
    while (i < box->nctx && strcmp(box->ctx[i].id, ctx) != 0)
        i++;
    if (i == box->nctx && box->nctx < E2B_MAX_CTX)
        snprintf(box->ctx[box->nctx++].id, sizeof box->ctx[0].id, "%s", ctx);
    if (i < box->nctx) {
        old = box->ctx[i].server;
        box->ctx[i].server = p;
        if (old && !proc_drop_locked(old))
            old = NULL;
    } else {
        rc = -1;
    }
    pthread_mutex_unlock(&box->lock);
    if (old)
        proc_free(old);
    if (rc < 0) {
        p->x = NULL;
        free(p);
    }
    return rc;
}

bool e2b_box_repl_shipped(e2b_box *box, bool set)
{
    pthread_mutex_lock(&box->lock);
    if (set)
        box->repl_shipped = true;
    bool v = box->repl_shipped;
    pthread_mutex_unlock(&box->lock);
    return v;
}

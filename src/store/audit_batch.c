/*
 * audit_batch.c - group commit of audit entries (fb_store_audit_append,
 * audit_log.h), for every store engine.
 *
 * Every authenticated request appends two or three audit entries (its
 * authentication and permission entries together, fb_store_audit_append_many)
 * and must not be answered before they are durable.  Committed one by one, each
 * entry costs a transaction and an fsync, and a busy gateway spends its
 * time waiting for the disk.  Here the appends that arrive while a commit
 * is being written wait in a queue; when it is done, the first of them
 * becomes the leader, takes the whole queue (up to BATCH_MAX) and writes
 * it in one transaction; the others sleep until the leader says their
 * entry is in (or why not).  Each waiter sleeps on its own semaphore and
 * is posted exactly once (done, or "lead the next commit"), outside the
 * queue's lock: a broadcast to every waiter per commit, or a wake-up that
 * must first retake the lock, cost more CPU than the commit.  Nobody returns before the commit that holds
 * its entry, so "answered" still implies "durable"; nobody waits longer
 * than one commit it did not join plus the one it did.  No thread of its
 * own: the leader is always a caller.
 *
 * Begun appends (fb_store_audit_append_begin/end): an exec's permission
 * entry is queued before its command starts and awaited after (docs/audit.md,
 * "Exec").  Between the two its waiter is parked: it holds its place in the
 * queue, and any commit takes it along, but it is never handed the lead
 * (its owner is busy starting the command, and nobody may wait for that);
 * a queue of parked waiters alone has no leader, and whoever comes next (a
 * plain append, or a parked owner arriving at its end) writes it.
 *
 * Order: entries are chained in queue order, which is arrival order under
 * the queue's lock.  A batch that fails (a refused chain, a full disk) is
 * retried entry by entry, so each caller gets the outcome of its own
 * entry, exactly as without batching.
 */
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

#include "store/backend.h"

#define BATCH_MAX 256
#define GROUP_MAX 8 /* entries one caller appends together (fb_store_audit_append_many) */

struct audit_waiter {
    fb_audit_append_item items[GROUP_MAX];
    size_t n;
    struct audit_waiter *next;
    sem_t wake; /* this waiter's own: posted once, when done or leading */
    bool lead;
    bool done;
    bool parked; /* begun (fb_store_audit_append_begin), its owner not waiting yet:
                    never chosen to lead, so nobody waits for an owner who is busy */
    int rc;
    fb_err err;
};

/* Writes a batch taken off the queue (no lock held) and records each
 * waiter's outcome.  A waiter's entries are consecutive and never split. */
static void write_batch(fb_store *st, struct audit_waiter **batch, size_t n)
{
    fb_audit_append_item items[BATCH_MAX + GROUP_MAX];
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < batch[i]->n; j++)
            items[total++] = batch[i]->items[j];
    fb_err err = {{0}};
    int rc = st->engine->audit->append_batch(st, items, total, &err);
    if (rc == 0 || n == 1) {
        for (size_t i = 0; i < n; i++) {
            batch[i]->rc = rc;
            batch[i]->err = err;
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        batch[i]->rc = st->engine->audit->append_batch(st, batch[i]->items, batch[i]->n, &batch[i]->err);
}

/* Puts me at the queue's end: from here on my entries' place in the chain
 * is fixed (after everything queued before, before everything queued
 * after).  true: nobody was writing and I lead (never when parked). */
static bool enqueue(fb_store *st, struct audit_waiter *me)
{
    bool lead = false;
    pthread_mutex_lock(&st->audit_mu);
    *st->audit_queue_tail = me;
    st->audit_queue_tail = &me->next;
    if (!me->parked && !st->audit_leader)
        st->audit_leader = lead = me->lead = true; /* nobody writing: I write */
    pthread_mutex_unlock(&st->audit_mu);
    return lead;
}

/* Leads commits until one holds me, or sleeps until one did.  lead: I was
 * made leader under the lock (by enqueue or unpark); otherwise my role is
 * read only after my semaphore was posted. */
static void wait_or_lead(fb_store *st, struct audit_waiter *me, bool lead)
{
    for (;;) {
        if (!lead) {
            while (sem_wait(&me->wake) < 0)
                ; /* EINTR */
            if (me->done)
                break;
            lead = me->lead; /* posted to lead */
            continue;
        }
        /* Lead: take what is queued (me among it) and write it. */
        lead = false;
        me->lead = false;
        struct audit_waiter *batch[BATCH_MAX];
        size_t n = 0, entries = 0;
        pthread_mutex_lock(&st->audit_mu);
        while (st->audit_queue && n < BATCH_MAX && entries + st->audit_queue->n <= BATCH_MAX + GROUP_MAX) {
            entries += st->audit_queue->n;
            batch[n++] = st->audit_queue;
            st->audit_queue = st->audit_queue->next;
        }
        if (!st->audit_queue)
            st->audit_queue_tail = &st->audit_queue;
        pthread_mutex_unlock(&st->audit_mu);
        write_batch(st, batch, n);
        /* The first waiter of what queued meanwhile that is waiting (not
         * parked) leads the next commit, or nobody leads (a parked owner
         * leads when it comes to wait, or the next append does), decided
         * under the lock with the batch's done flags; then one post per
         * waiter, outside it, so that a woken waiter does not at once block
         * on the lock.  A waiter reads its flags only after its post (or
         * under the lock), and nobody touches it after that post. */
        bool mine = false;
        pthread_mutex_lock(&st->audit_mu);
        for (size_t i = 0; i < n; i++) {
            batch[i]->done = true;
            mine |= batch[i] == me;
        }
        struct audit_waiter *next = st->audit_queue;
        while (next && next->parked)
            next = next->next;
        if (next)
            next->lead = true;
        else
            st->audit_leader = false;
        pthread_mutex_unlock(&st->audit_mu);
        if (next)
            sem_post(&next->wake); /* first: the next commit starts while the others wake */
        for (size_t i = 0; i < n; i++)
            if (batch[i] != me)
                sem_post(&batch[i]->wake);
        if (mine)
            break;
        /* A full batch (BATCH_MAX) ended before me: parked entries queued
         * ahead of me while nobody led.  I am still queued and waiting; if
         * I was chosen above, my post says so. */
    }
}

static void waiter_init(struct audit_waiter *w, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                        bool parked)
{
    memset(w, 0, sizeof *w);
    w->n = count;
    w->parked = parked;
    for (size_t i = 0; i < count; i++)
        w->items[i] = (fb_audit_append_item){chain, ctxs[i]};
    sem_init(&w->wake, 0, 0);
}

int fb_store_audit_append_many(fb_store *st, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                               fb_err *err)
{
    if (count == 0 || count > GROUP_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "audit: %zu entries in one append (1 to %d)", count, GROUP_MAX);
    struct audit_waiter me;
    waiter_init(&me, chain, ctxs, count, false);
    wait_or_lead(st, &me, enqueue(st, &me));
    sem_destroy(&me.wake);
    if (me.rc < 0 && err)
        *err = me.err;
    return me.rc;
}

struct fb_store_audit_ticket {
    struct audit_waiter w;
};

int fb_store_audit_append_begin(fb_store *st, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                                fb_store_audit_ticket **out, fb_err *err)
{
    *out = NULL;
    if (count == 0 || count > GROUP_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "audit: %zu entries in one append (1 to %d)", count, GROUP_MAX);
    fb_store_audit_ticket *t = malloc(sizeof *t);
    if (!t)
        return fb_fail_code(err, FB_STORE_ENOMEM, "audit: out of memory");
    waiter_init(&t->w, chain, ctxs, count, true);
    enqueue(st, &t->w);
    *out = t;
    return 0;
}

int fb_store_audit_append_end(fb_store *st, fb_store_audit_ticket *t, fb_err *err)
{
    if (!t)
        return 0;
    struct audit_waiter *me = &t->w;
    pthread_mutex_lock(&st->audit_mu);
    me->parked = false;
    /* Already written (done: its post is on the way and is consumed
     * below), or being written by a leader who will post me, or waiting
     * with nobody writing: then I write, now. */
    bool lead = !me->done && !st->audit_leader;
    if (lead)
        st->audit_leader = me->lead = true;
    pthread_mutex_unlock(&st->audit_mu);
    wait_or_lead(st, me, lead);
    sem_destroy(&me->wake);
    int rc = me->rc;
    if (rc < 0 && err)
        *err = me->err;
    free(t);
    return rc;
}

int fb_store_audit_append(fb_store *st, fb_audit_chain_fn chain, void *ctx, fb_err *err)
{
    return fb_store_audit_append_many(st, chain, &ctx, 1, err);
}

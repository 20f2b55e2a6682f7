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

int fb_store_audit_append_many(fb_store *st, fb_audit_chain_fn chain, void *const *ctxs, size_t count,
                               fb_err *err)
{
    if (count == 0 || count > GROUP_MAX)
        return fb_fail_code(err, FB_STORE_EINVAL, "audit: %zu entries in one append (1 to %d)", count, GROUP_MAX);
    struct audit_waiter me = {.n = count};
    for (size_t i = 0; i < count; i++)
        me.items[i] = (fb_audit_append_item){chain, ctxs[i]};
    sem_init(&me.wake, 0, 0);
    pthread_mutex_lock(&st->audit_mu);
    *st->audit_queue_tail = &me;
    st->audit_queue_tail = &me.next;
    if (!st->audit_leader)
        st->audit_leader = me.lead = true; /* nobody writing: the queue is just me */
    pthread_mutex_unlock(&st->audit_mu);
    for (;;) {
        if (!me.lead) {
            while (sem_wait(&me.wake) < 0)
                ; /* EINTR */
            if (me.done)
                break;
            continue; /* posted to lead */
        }
        /* Lead: take what is queued (me first) and write it. */
        me.lead = false;
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
        /* The head of what queued meanwhile leads the next commit (or
         * nobody leads), decided under the lock; then one post per waiter,
         * outside it, so that a woken waiter does not at once block on the
         * lock.  A waiter reads its flags only after its post, and nobody
         * touches it after that post. */
        pthread_mutex_lock(&st->audit_mu);
        struct audit_waiter *next = st->audit_queue;
        if (next)
            next->lead = true;
        else
            st->audit_leader = false;
        pthread_mutex_unlock(&st->audit_mu);
        for (size_t i = 0; i < n; i++)
            batch[i]->done = true;
        if (next)
            sem_post(&next->wake); /* first: the next commit starts while the others wake */
        for (size_t i = 0; i < n; i++)
            if (batch[i] != &me)
                sem_post(&batch[i]->wake);
        break; /* I was in my own batch */
    }
    sem_destroy(&me.wake);
    if (me.rc < 0 && err)
        *err = me.err;
    return me.rc;
}

int fb_store_audit_append(fb_store *st, fb_audit_chain_fn chain, void *ctx, fb_err *err)
{
    return fb_store_audit_append_many(st, chain, &ctx, 1, err);
}

/*
 * task_journal.c - writes task transcript events to the store in batches,
 * off the task's own thread.
 *
 * A task emits many events (every streamed text delta, each tool call and
 * result, usage, states), and readers follow them from memory while the
 * task is live (task_events.c).  The store only answers for a task once it
 * has left memory, and for replays after a restart.  Writing each event in
 * its own transaction put one fsync per text delta on the model's path;
 * here events queue up and one thread writes whatever has queued in one
 * transaction, so a busy task pays one commit per batch and never waits
 * for the disk itself.
 *
 * What this costs: after a crash (SIGKILL, power), the last few
 * milliseconds of a transcript may be missing from the store; the task
 * itself is then failed at start-up (core_tasks_recover) and its record,
 * approvals and audit entries are written synchronously as before.  What
 * it never costs: a task leaves memory only after core_journal_flush has
 * seen its events written, so a reader never finds a hole.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

#define BATCH_MAX 512

typedef struct journal_item {
    struct journal_item *next;
    char task_id[32];
    uint64_t seq;
    char type[32];
    char at[FB_TIME_MAX];
    char *data;
} journal_item;

static void item_free(journal_item *it)
{
    free(it->data);
    free(it);
}

/* Writes one batch (no lock held); a failed batch is logged per task. */
static void write_batch(fb_core *c, journal_item **items, size_t n)
{
    fb_task_event_row rows[BATCH_MAX];
    for (size_t i = 0; i < n; i++)
        rows[i] = (fb_task_event_row){items[i]->task_id, items[i]->seq, items[i]->type, items[i]->data,
                                      items[i]->at};
    fb_err e = {{0}};
    if (fb_store_task_events_append(c->store, rows, n, &e) == 0)
        return;
    /* One bad row (a duplicate seq would be a bug) must not lose the
     * others: retry them one by one. */
    for (size_t i = 0; i < n; i++) {
        fb_err e1 = {{0}};
        if (fb_store_task_events_append(c->store, &rows[i], 1, &e1) < 0)
            fb_log("error", NULL, "cannot record a task event",
                   json_pack("{s:s, s:s, s:s}", "task", rows[i].task_id, "type", rows[i].type, "error", e1.msg));
    }
}

static void *journal_main(void *arg)
{
    fb_core *c = arg;
    core_journal *j = &c->journal;
    pthread_mutex_lock(&j->lock);
    for (;;) {
        while (!j->head && !j->stopping)
            pthread_cond_wait(&j->wake, &j->lock);
        if (!j->head && j->stopping)
            break;
        journal_item *batch[BATCH_MAX];
        size_t n = 0;
        while (j->head && n < BATCH_MAX) {
            batch[n++] = j->head;
            j->head = j->head->next;
        }
        if (!j->head)
            j->tail = &j->head;
        pthread_mutex_unlock(&j->lock);
        write_batch(c, batch, n);
        for (size_t i = 0; i < n; i++)
            item_free(batch[i]);
        pthread_mutex_lock(&j->lock);
        j->written += n;
        pthread_cond_broadcast(&j->done);
    }
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

int core_journal_start(fb_core *c, fb_err *err)
{
    core_journal *j = &c->journal;
    pthread_mutex_init(&j->lock, NULL);
    pthread_cond_init(&j->wake, NULL);
    pthread_cond_init(&j->done, NULL);
    j->tail = &j->head;
    if (pthread_create(&j->thread, NULL, journal_main, c) != 0)
        return fb_fail(err, "cannot start the task journal thread");
    j->running = true;
    return 0;
}

void core_journal_add(fb_core *c, const char *task_id, uint64_t seq, const char *type, char *data,
                      const char *at)
{
    core_journal *j = &c->journal;
    journal_item *it = calloc(1, sizeof *it);
    if (!it || !j->running) {
        /* No journal (out of memory, or stopped): write it now. */
        fb_err e = {{0}};
        fb_task_event_row row = {task_id, seq, type, data, at};
        if (fb_store_task_events_append(c->store, &row, 1, &e) < 0)
            fb_log("error", NULL, "cannot record a task event",
                   json_pack("{s:s, s:s, s:s}", "task", task_id, "type", type, "error", e.msg));
        free(it);
        free(data);
        return;
    }
    snprintf(it->task_id, sizeof it->task_id, "%s", task_id);
    it->seq = seq;
    snprintf(it->type, sizeof it->type, "%s", type);
    snprintf(it->at, sizeof it->at, "%s", at);
    it->data = data;
    pthread_mutex_lock(&j->lock);
    *j->tail = it;
    j->tail = &it->next;
    j->queued++;
    pthread_cond_signal(&j->wake);
    pthread_mutex_unlock(&j->lock);
}

void core_journal_flush(fb_core *c)
{
    core_journal *j = &c->journal;
    if (!j->running)
        return;
    pthread_mutex_lock(&j->lock);
    uint64_t upto = j->queued;
    while (j->written < upto)
        pthread_cond_wait(&j->done, &j->lock);
    pthread_mutex_unlock(&j->lock);
}

void core_journal_stop(fb_core *c)
{
    core_journal *j = &c->journal;
    if (!j->running)
        return;
    pthread_mutex_lock(&j->lock);
    j->stopping = true;
    pthread_cond_broadcast(&j->wake);
    pthread_mutex_unlock(&j->lock);
    pthread_join(j->thread, NULL); /* it drains the queue before it ends */
    j->running = false;
    pthread_cond_destroy(&j->done);
    pthread_cond_destroy(&j->wake);
    pthread_mutex_destroy(&j->lock);
}

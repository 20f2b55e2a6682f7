/*
 * spawner.c - sandboxes are booted on long-lived threads (sandbox.h).
 *
 * Sandbox processes get PR_SET_PDEATHSIG so that they die with their
 * manager, and the kernel ties that signal to the creating *thread*, not
 * the process: a sandbox booted on a request thread of a server would be
 * killed when that thread ends.  So every boot runs on one of a few
 * threads that live as long as the process (started on first use), while
 * the caller waits.  SPAWNERS boots (a VM takes seconds under TCG) run at
 * once; more wait their turn in order.  The threads are started as boots
 * need them, so a process that boots one sandbox starts one thread.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "sandbox/supervisor.h"

#define SPAWNERS 8

/* One boot request, on the waiting caller's stack. */
typedef struct job {
    struct job *next;
    const fb_sandbox_config *cfg;
    fb_sandbox *out;
    fb_errc code;
    fb_err err;
    bool done;
} job;

static job *head, *tail; /* FIFO of waiting boots */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t have_work = PTHREAD_COND_INITIALIZER, job_done = PTHREAD_COND_INITIALIZER;
static int started, idle; /* spawner threads, and how many wait for work */

/* The oldest waiting boot, once there is one (lock held; the caller was
 * counted idle). */
static job *next_job_locked(void)
{
    while (!head)
        pthread_cond_wait(&have_work, &lock);
    idle--;
    job *j = head;
    if (!(head = j->next))
        tail = NULL;
    return j;
}

static void *spawner_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        job *j = next_job_locked();
        pthread_mutex_unlock(&lock);
        j->code = fb_sandbox_boot_here(j->cfg, &j->out, &j->err);
        pthread_mutex_lock(&lock);
        j->done = true;
        idle++;
        pthread_cond_broadcast(&job_done);
    }
    return NULL;
}

fb_errc fb_sandbox_boot(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    *out = NULL;
    job j = {.cfg = cfg};
    pthread_mutex_lock(&lock);
    /* Threads are started as boots need them (one for `forgebox run`),
     * up to SPAWNERS: a boot waiting in the queue while all are busy
     * starts another. */
    int queued = 0;
    for (job *q = head; q; q = q->next)
        queued++;
    while (started < SPAWNERS && idle <= queued) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, spawner_main, NULL);
        pthread_attr_destroy(&attr);
        if (rc != 0)
            break;
        started++;
        idle++; /* until it takes its first job */
    }
    if (started == 0) {
        pthread_mutex_unlock(&lock);
        fb_fail(err, "cannot start a sandbox spawner thread");
        return FB_E_RESOURCE;
    }
    *(tail ? &tail->next : &head) = &j;
    tail = &j;
    pthread_cond_signal(&have_work);
    while (!j.done)
        pthread_cond_wait(&job_done, &lock);
    pthread_mutex_unlock(&lock);
    if (j.code != FB_OK && err)
        *err = j.err;
    *out = j.out;
    return j.code;
}

/*
 * spawner.c - creates sandboxes on one long-lived thread (internal.h).
 *
 * Sandbox processes get PR_SET_PDEATHSIG so that they die with the
 * gateway; the kernel ties that signal to the creating *thread*.  Request
 * threads end with their connection, which would kill the sandboxes they
 * created, so creation is handed to a small pool of threads that live as
 * long as the gateway, and the caller waits.  SPAWNERS creations (a VM's
 * boot takes seconds under TCG) run at once; more wait their turn.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

typedef struct job {
    const fb_sandbox_config *cfg;
    fb_sandbox *out;
    fb_err err;
    int rc;
    bool done;
    pthread_cond_t cond;
    struct job *next;
} job;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t have_work = PTHREAD_COND_INITIALIZER;
static job *head, *tail;
#define SPAWNERS 8
static bool stopping;
static int running;
static pthread_t threads[SPAWNERS];

static void *spawner_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!head && !stopping)
            pthread_cond_wait(&have_work, &lock);
        if (!head && stopping)
            break;
        job *j = head;
        head = j->next;
        if (!head)
            tail = NULL;
        pthread_mutex_unlock(&lock);
        j->rc = fb_sandbox_create(j->cfg, &j->out, &j->err);
        pthread_mutex_lock(&lock);
        j->done = true;
        pthread_cond_signal(&j->cond);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

int core_spawner_start(void)
{
    stopping = false;
    for (running = 0; running < SPAWNERS; running++)
        if (pthread_create(&threads[running], NULL, spawner_main, NULL) != 0)
            return -1;
    return 0;
}

void core_spawner_stop(void)
{
    if (running == 0)
        return;
    pthread_mutex_lock(&lock);
    stopping = true;
    pthread_cond_broadcast(&have_work);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < running; i++)
        pthread_join(threads[i], NULL);
    running = 0;
}

int core_spawn_sandbox(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    job j;
    memset(&j, 0, sizeof j);
    j.cfg = cfg;
    pthread_cond_init(&j.cond, NULL);
    pthread_mutex_lock(&lock);
    if (stopping) {
        pthread_mutex_unlock(&lock);
        pthread_cond_destroy(&j.cond);
        return fb_fail(err, "the gateway is shutting down");
    }
    if (tail)
        tail->next = &j;
    else
        head = &j;
    tail = &j;
    pthread_cond_signal(&have_work);
    while (!j.done)
        pthread_cond_wait(&j.cond, &lock);
    pthread_mutex_unlock(&lock);
    pthread_cond_destroy(&j.cond);
    if (j.rc < 0) {
        if (err)
            *err = j.err;
        return -1;
    }
    *out = j.out;
    return 0;
}

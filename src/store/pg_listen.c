/*
 * pg_listen.c - the listening half of fb_sql_notify on PostgreSQL: one
 * thread with a connection of its own that LISTENs on a channel and calls
 * back on every notification (fb_store_watch_identity, store.h).
 *
 * Why a connection of its own: the store's connection is shared by every
 * request under one mutex and only reads what a statement returns; a
 * listener must sit in poll() on its socket for as long as the gateway
 * runs.
 *
 * What a listener cannot hear it must not pretend to have heard: while its
 * connection is down (PostgreSQL restarted, the network broke), changes
 * committed elsewhere are not announced to it.  So it reports DOWN on
 * losing the connection and after every failed attempt to get it back
 * (every RETRY_MS: the caller forgets its cache each time, so nothing it
 * verified before the outage outlives it by more than that), and UP once
 * LISTEN succeeds again (the caller forgets everything once more: what
 * was announced in between is lost).  A server that vanished without
 * closing the socket is noticed by TCP keepalives (the same settings as
 * pg_sql.c), and the listener also pings every PING_MS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/backend.h"

#define RETRY_MS 500
#define PING_MS 5000

struct fb_pg_listener {
    char *url;
    char channel[64];
    fb_store_watch_fn fn;
    void *ctx;
    int stop_pipe[2]; /* a byte (or the close) on [1] wakes the thread to stop */
    pthread_t thread;
};

static PGconn *connect_listening(const struct fb_pg_listener *l)
{
    const char *const keys[] = {"connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                "tcp_user_timeout", "dbname", NULL};
    const char *const vals[] = {"5", "15", "5", "3", "30000", l->url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    /* The channel is our own compiled-in identifier, never outside text. */
    char sql[96];
    snprintf(sql, sizeof sql, "LISTEN %s", l->channel);
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok || PQsetnonblocking(c, 1) != 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* Waits up to ms for fd (or -1: none) or the stop pipe: 1 fd readable,
 * 0 timeout, -1 stop. */
static int wait_for(const struct fb_pg_listener *l, int fd, int ms)
{
    struct pollfd p[2] = {{.fd = l->stop_pipe[0], .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, fd >= 0 ? 2 : 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || (p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            return -1;
        if (n == 0)
            return 0;
        return 1;
    }
}

/* A round trip on an idle connection: false if the server is gone. */
static bool ping(PGconn *c)
{
    if (PQsetnonblocking(c, 0) != 0)
        return false;
    PGresult *r = PQexec(c, "SELECT 1");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    return ok && PQsetnonblocking(c, 1) == 0;
}

static void *listen_main(void *arg)
{
    struct fb_pg_listener *l = arg;
    PGconn *c = NULL;
    for (;;) {
        if (!c) {
            c = connect_listening(l);
            if (!c) {
                l->fn(l->ctx, FB_STORE_WATCH_DOWN);
                if (wait_for(l, -1, RETRY_MS) < 0)
                    break;
                continue;
            }
            l->fn(l->ctx, FB_STORE_WATCH_UP);
        }
        int w = wait_for(l, PQsocket(c), PING_MS);
        if (w < 0)
            break;
        bool alive = w == 1 ? PQconsumeInput(c) == 1 : ping(c);
        bool heard = false;
        PGnotify *n;
        while (alive && (n = PQnotifies(c)) != NULL) {
            heard = true;
            PQfreemem(n);
        }
        if (heard)
            l->fn(l->ctx, FB_STORE_WATCH_CHANGED);
        if (!alive || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            c = NULL;
            l->fn(l->ctx, FB_STORE_WATCH_DOWN);
        }
    }
    PQfinish(c);
    return NULL;
}

int fb_pg_listen_start(const char *url, const char *channel, fb_store_watch_fn fn, void *ctx,
                       struct fb_pg_listener **out, fb_err *err)
{
    *out = NULL;
    if (!url || !channel || strlen(channel) >= sizeof((struct fb_pg_listener *)0)->channel)
        return fb_fail(err, "internal: no store URL or channel to listen on");
    struct fb_pg_listener *l = calloc(1, sizeof *l);
    if (!l || !(l->url = strdup(url))) {
        free(l);
        return fb_fail(err, "out of memory");
    }
    snprintf(l->channel, sizeof l->channel, "%s", channel);
    l->fn = fn;
    l->ctx = ctx;
    if (pipe2(l->stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        fb_fail_errno(err, "cannot create the listener's pipe");
        goto fail;
    }
    int rc = pthread_create(&l->thread, NULL, listen_main, l);
    if (rc != 0) {
        errno = rc;
        fb_fail_errno(err, "cannot start the identity listener thread");
        close(l->stop_pipe[0]);
        close(l->stop_pipe[1]);
        goto fail;
    }
    *out = l;
    return 0;
fail:
    explicit_bzero(l->url, strlen(l->url));
    free(l->url);
    free(l);
    return -1;
}

void fb_pg_listen_stop(struct fb_pg_listener *l)
{
    if (!l)
        return;
    close(l->stop_pipe[1]); /* POLLHUP on [0] */
    pthread_join(l->thread, NULL);
    close(l->stop_pipe[0]);
    explicit_bzero(l->url, strlen(l->url)); /* it may carry the database password */
    free(l->url);
    free(l);
}

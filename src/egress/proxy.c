/*
 * proxy.c - the egress proxy's life: its thread and event loop, the
 * settings it keeps, and each sandbox's listener (egress.h).
 *
 * The proxy owns one thread; everything that touches its state (sandboxes,
 * connections, the resolver) runs there, so nothing needs a lock.  Calls
 * from other threads (add, remove, stop) become commands: a pointer to a
 * command written down a pipe, executed by the loop, answered through a
 * semaphore the caller waits on.  So when fb_egress_remove_sandbox
 * returns, the listener is gone and no connection of that sandbox is left.
 *
 * A sandbox's listener is a Unix socket that only the manager's user can
 * open (0600, set between bind and listen, so nobody connects before);
 * its path names the sandbox, and every connection accepted on it is that
 * sandbox's, whatever it later claims.  All signals are blocked on the
 * proxy's thread: a write to a peer that went away must not raise SIGPIPE
 * in the manager.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "egress/internal.h"

enum cmd_kind { CMD_ADD, CMD_ADOPT, CMD_REMOVE, CMD_STOP };

typedef struct cmd {
    enum cmd_kind kind;
    const char *id;
    const fb_egress_list *grant;
    char *path_out;
    size_t cap;
    int fd; /* CMD_ADOPT */
    fb_egress_rc rc;
    fb_err err;
    sem_t done;
} cmd;

const char *fb_egress_outcome_name(fb_egress_outcome o)
{
    switch (o) {
    case FB_EGRESS_ALLOWED: return "allowed";
    case FB_EGRESS_DENIED: return "denied";
    case FB_EGRESS_LIMITED: return "limited";
    case FB_EGRESS_FAILED: return "failed";
    }
    return "failed";
}

/* ---- sandboxes (on the proxy's thread) ------------------------------------ */

static egress_sandbox *find(fb_egress *p, const char *id, egress_sandbox ***link)
{
    for (egress_sandbox **l = &p->sandboxes; *l; l = &(*l)->next)
        if (strcmp((*l)->id, id) == 0) {
            if (link)
                *link = l;
            return *l;
        }
    return NULL;
}

static void on_accept(struct evconnlistener *ln, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    (void)ln, (void)sa, (void)len;
    egress_conn_accept(arg, fd);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    egress_sandbox *sb = arg;
    evconnlistener_enable(sb->listener);
}

/* Out of descriptors, usually: stop accepting on this listener for a
 * moment rather than spin on the same error. */
static void on_accept_error(struct evconnlistener *ln, void *arg)
{
    egress_sandbox *sb = arg;
    struct timeval pause = {0, 200000};
    evconnlistener_disable(ln);
    evtimer_add(sb->resume, &pause);
}

static bool id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > EGRESS_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    }
    return true;
}

static int listen_unix(const char *path, fb_err *err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sun.sun_path)
        return fb_fail(err, "listener path '%s' is too long", path);
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fb_fail_errno(err, "socket");
    if (unlink(path) < 0 && errno != ENOENT) {
        fb_fail_errno(err, "removing stale %s", path);
        close(fd);
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || chmod(path, 0600) < 0 || listen(fd, 128) < 0) {
        fb_fail_errno(err, "listening on %s", path);
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

static fb_egress_rc add_sandbox(fb_egress *p, cmd *c)
{
    if (!id_ok(c->id))
        return fb_fail_code(&c->err, FB_EGRESS_RC_INVALID, "sandbox id must be 1..%d of [A-Za-z0-9_-]",
                            EGRESS_ID_MAX);
    if (find(p, c->id, NULL))
        return fb_fail_code(&c->err, FB_EGRESS_RC_EXISTS, "sandbox %s already has an egress listener", c->id);
    fb_decision d;
    if (fb_egress_grant_check(c->grant, p->has_ceiling ? &p->ceiling : NULL, &p->deny, &d) != FB_ALLOW)
        return fb_fail_code(&c->err, FB_EGRESS_RC_POLICY, "%s", d.reason);
    egress_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb)
        return fb_fail_code(&c->err, FB_EGRESS_RC_SYSTEM, "out of memory");
    sb->proxy = p;
    snprintf(sb->id, sizeof sb->id, "%s", c->id);
    sb->grant = *c->grant;
    int n = snprintf(sb->path, sizeof sb->path, "%s/egress-%s.sock", p->runtime_dir, c->id);
    int fd = -1;
    if (n < 0 || (size_t)n >= sizeof sb->path || (size_t)n >= c->cap) {
        fb_fail(&c->err, "listener path for %s is too long (runtime_dir or cap)", c->id);
    } else if ((fd = listen_unix(sb->path, &c->err)) >= 0) {
        sb->listener = evconnlistener_new(p->base, on_accept, sb, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                          -1, fd);
        if (!sb->listener) {
            close(fd);
            unlink(sb->path);
            fb_fail(&c->err, "libevent listener for %s", sb->path);
        }
    }
    if (sb->listener && !(sb->resume = evtimer_new(p->base, on_resume, sb))) {
        evconnlistener_free(sb->listener);
        unlink(sb->path);
        sb->listener = NULL;
        fb_fail(&c->err, "out of memory");
    }
    if (!sb->listener) {
        free(sb);
        return FB_EGRESS_RC_SYSTEM;
    }
    evconnlistener_set_error_cb(sb->listener, on_accept_error);
    memcpy(c->path_out, sb->path, (size_t)n + 1);
    sb->next = p->sandboxes;
    p->sandboxes = sb;
    return FB_EGRESS_RC_OK;
}

static void drop_sandbox(egress_sandbox **link)
{
    egress_sandbox *sb = *link;
    *link = sb->next;
    evconnlistener_free(sb->listener);
    event_free(sb->resume);
    unlink(sb->path);
    egress_conn_close_all(sb);
    free(sb);
}

static void on_command(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    fb_egress *p = arg;
    cmd *c;
    ssize_t n = read(fd, &c, sizeof c);
    if (n != (ssize_t)sizeof c)
        return;
    c->rc = FB_EGRESS_RC_OK;
    egress_sandbox **link;
    switch (c->kind) {
    case CMD_ADD:
        c->rc = add_sandbox(p, c);
        break;
    case CMD_ADOPT: {
        egress_sandbox *sb = find(p, c->id, NULL);
        if (sb) {
            evutil_make_socket_nonblocking(c->fd);
            egress_conn_accept(sb, c->fd);
        } else {
            close(c->fd);
            c->rc = fb_fail_code(&c->err, FB_EGRESS_RC_NOT_FOUND, "no egress listener for sandbox %.64s", c->id);
        }
        break;
    }
    case CMD_REMOVE:
        if (find(p, c->id, &link))
            drop_sandbox(link);
        else
            c->rc = fb_fail_code(&c->err, FB_EGRESS_RC_NOT_FOUND, "no egress listener for sandbox %.64s", c->id);
        break;
    case CMD_STOP:
        while (p->sandboxes)
            drop_sandbox(&p->sandboxes);
        event_base_loopbreak(p->base);
        break;
    }
    sem_post(&c->done);
}

static fb_egress_rc run_command(fb_egress *p, cmd *c, fb_err *err)
{
    sem_init(&c->done, 0, 0);
    c->err.msg[0] = '\0';
    if (fb_write_all(p->cmd_fd[1], &c, sizeof c) < 0) {
        sem_destroy(&c->done);
        return fb_fail_code(err, FB_EGRESS_RC_SYSTEM, "egress proxy is not running");
    }
    while (sem_wait(&c->done) < 0 && errno == EINTR)
        ;
    sem_destroy(&c->done);
    if (c->rc != FB_EGRESS_RC_OK && err)
        *err = c->err;
    return c->rc;
}

/* ---- the thread -------------------------------------------------------------- */

static void *loop_main(void *arg)
{
    fb_egress *p = arg;
    event_base_dispatch(p->base);
    return NULL;
}

static void apply_defaults(fb_egress_limits *l)
{
    if (!l->max_conns)
        l->max_conns = 32;
    if (!l->max_bytes_up)
        l->max_bytes_up = 1ull << 30;
    if (!l->max_bytes_down)
        l->max_bytes_down = 8ull << 30;
    if (!l->connect_timeout_ms)
        l->connect_timeout_ms = 10000;
    if (!l->idle_timeout_ms)
        l->idle_timeout_ms = 60000;
    if (!l->header_max)
        l->header_max = 16384;
    if (l->header_max > 65536)
        l->header_max = 65536;
}

static fb_egress_rc copy_hosts(fb_egress *p, const fb_egress_settings *s, fb_err *err)
{
    if (!s->n_hosts)
        return FB_EGRESS_RC_OK;
    p->hosts = calloc(s->n_hosts, sizeof *p->hosts);
    if (!p->hosts)
        return fb_fail_code(err, FB_EGRESS_RC_SYSTEM, "out of memory");
    p->n_hosts = s->n_hosts;
    for (size_t i = 0; i < s->n_hosts; i++) {
        const fb_egress_host *h = &s->hosts[i];
        if (fb_egress_host_parse(h->name, p->hosts[i].name, sizeof p->hosts[i].name, err) != FB_EGRESS_OK)
            return fb_fail_prefix(err, "network.hosts"), FB_EGRESS_RC_INVALID;
        if (h->n_addrs == 0 || h->n_addrs > EGRESS_ADDRS_MAX)
            return fb_fail_code(err, FB_EGRESS_RC_INVALID, "network.hosts %s: give 1..%d addresses",
                                p->hosts[i].name, EGRESS_ADDRS_MAX);
        for (size_t j = 0; j < h->n_addrs; j++)
            if (fb_egress_addr_parse(h->addrs[j], true, &p->hosts[i].addrs[j], err) != FB_EGRESS_OK ||
                p->hosts[i].addrs[j].port != 0)
                return fb_fail_code(err, FB_EGRESS_RC_INVALID, "network.hosts %s: '%.64s' is not a numeric address",
                                    p->hosts[i].name, h->addrs[j]);
        p->hosts[i].n = h->n_addrs;
    }
    return FB_EGRESS_RC_OK;
}

static fb_egress_rc configure(fb_egress *p, const fb_egress_settings *s, fb_err *err)
{
    if (!s->runtime_dir || strlen(s->runtime_dir) >= sizeof p->runtime_dir - 40)
        return fb_fail_code(err, FB_EGRESS_RC_INVALID, "egress runtime_dir missing or longer than %zu",
                            sizeof p->runtime_dir - 41);
    snprintf(p->runtime_dir, sizeof p->runtime_dir, "%s", s->runtime_dir);
    p->limits = s->limits;
    apply_defaults(&p->limits);
    p->has_ceiling = s->ceiling != NULL;
    if (s->ceiling)
        p->ceiling = *s->ceiling;
    if (s->deny)
        p->deny = *s->deny;
    if (s->n_allow_private) {
        p->allow_private = calloc(s->n_allow_private, sizeof *p->allow_private);
        if (!p->allow_private)
            return fb_fail_code(err, FB_EGRESS_RC_SYSTEM, "out of memory");
        memcpy(p->allow_private, s->allow_private, s->n_allow_private * sizeof *p->allow_private);
        p->n_allow_private = s->n_allow_private;
    }
    p->dns_disabled = s->dns_disabled;
    p->audit = s->audit;
    p->audit_ctx = s->audit_ctx;
    return copy_hosts(p, s, err);
}

static void free_proxy(fb_egress *p)
{
    egress_resolver_free(p->resolver);
    if (p->cmd_ev)
        event_free(p->cmd_ev);
    if (p->base)
        event_base_free(p->base);
    if (p->cmd_fd[0] >= 0)
        close(p->cmd_fd[0]);
    if (p->cmd_fd[1] >= 0)
        close(p->cmd_fd[1]);
    free(p->allow_private);
    free(p->hosts);
    free(p);
}

fb_egress_rc fb_egress_start(const fb_egress_settings *s, fb_egress **out, fb_err *err)
{
    fb_egress *p = calloc(1, sizeof *p);
    if (!p)
        return fb_fail_code(err, FB_EGRESS_RC_SYSTEM, "out of memory");
    p->cmd_fd[0] = p->cmd_fd[1] = -1;
    fb_egress_rc rc = configure(p, s, err);
    if (rc != FB_EGRESS_RC_OK) {
        free_proxy(p);
        return rc;
    }
    rc = FB_EGRESS_RC_SYSTEM;
    if (pipe2(p->cmd_fd, O_CLOEXEC) < 0) {
        fb_fail_errno(err, "pipe");
    } else if (!(p->base = event_base_new()) || !(p->cmd_ev = event_new(p->base, p->cmd_fd[0], EV_READ | EV_PERSIST,
                                                                         on_command, p))) {
        fb_fail(err, "libevent: cannot create the event loop");
    } else if (!p->dns_disabled &&
               egress_resolver_new(p->base, s->dns_servers, s->dns_timeout_ms, &p->resolver, err) < 0) {
        /* err says why */
    } else {
        rc = FB_EGRESS_RC_OK;
    }
    if (rc == FB_EGRESS_RC_OK) {
        event_add(p->cmd_ev, NULL);
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&p->thread, NULL, loop_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
            errno = e;
            rc = fb_fail_code(err, FB_EGRESS_RC_SYSTEM, "cannot start the egress thread: %s", strerror(e));
        }
    }
    if (rc != FB_EGRESS_RC_OK) {
        free_proxy(p);
        return rc;
    }
    *out = p;
    return FB_EGRESS_RC_OK;
}

fb_egress_rc fb_egress_add_sandbox(fb_egress *p, const char *sandbox_id, const fb_egress_list *grant, char *path_out,
                                   size_t cap, fb_err *err)
{
    if (!p || !grant || !path_out || cap == 0)
        return fb_fail_code(err, FB_EGRESS_RC_INVALID, "fb_egress_add_sandbox: missing argument");
    cmd c = {.kind = CMD_ADD, .id = sandbox_id, .grant = grant, .path_out = path_out, .cap = cap};
    return run_command(p, &c, err);
}

fb_egress_rc fb_egress_adopt(fb_egress *p, const char *sandbox_id, int fd, fb_err *err)
{
    if (!p || !sandbox_id || fd < 0) {
        if (fd >= 0)
            close(fd);
        return fb_fail_code(err, FB_EGRESS_RC_INVALID, "fb_egress_adopt: missing argument");
    }
    cmd c = {.kind = CMD_ADOPT, .id = sandbox_id, .fd = fd};
    fb_egress_rc rc = run_command(p, &c, err);
    if (rc == FB_EGRESS_RC_SYSTEM && c.err.msg[0] == '\0')
        close(fd); /* never reached the proxy's thread */
    return rc;
}

fb_egress_rc fb_egress_remove_sandbox(fb_egress *p, const char *sandbox_id, fb_err *err)
{
    if (!p || !sandbox_id)
        return fb_fail_code(err, FB_EGRESS_RC_INVALID, "fb_egress_remove_sandbox: missing argument");
    cmd c = {.kind = CMD_REMOVE, .id = sandbox_id};
    return run_command(p, &c, err);
}

void fb_egress_stop(fb_egress *p)
{
    if (!p)
        return;
    cmd c = {.kind = CMD_STOP};
    if (run_command(p, &c, NULL) == FB_EGRESS_RC_OK)
        pthread_join(p->thread, NULL);
    free_proxy(p);
}

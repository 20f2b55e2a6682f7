/*
 * main.c - fb-agent: the guest side of every sandbox.
 *
 *   fb-agent --vm --channel /dev/vportNpM   (PID 1 of a microVM, from initramfs)
 *   fb-agent --jail --channel-fd N          (PID 1 of a jail's pid namespace)
 *
 * It mounts what the sandbox needs, waits for the host's "hello" (which
 * carries the scratch sizes and limits), then serves requests until told to
 * shut down or until the channel breaks, and then ends the sandbox: a VM
 * powers off, a jail's pid namespace exits.  A protocol error from the host
 * is fatal for this sandbox and only this sandbox.
 */
#define _GNU_SOURCE
#include "agent/agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#define die fb_agent_die

void fb_agent_die(fb_agent *a, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fb-agent: %s\n", msg);
    if (a && a->chan.fd >= 0) {
        json_t *h = fb_hdr_new("fatal", 0);
        json_object_set_new(h, "message", json_string(msg));
        fb_err err;
        if (fb_chan_send(&a->chan, h, NULL, 0, &err) == 0)
            (void)fb_chan_flush_all(&a->chan, 1000, &err);
        json_decref(h);
    }
    fb_pid1_poweroff(a ? a->mode : FB_MODE_JAIL, 1);
}

void fb_agent_send(fb_agent *a, json_t *h, const void *payload, size_t len)
{
    fb_err err = {{0}};
    int rc = fb_chan_send(&a->chan, h, payload, len, &err);
    json_decref(h);
    if (rc < 0)
        die(a, "cannot queue a frame for the host: %s", err.msg);
}

int fb_agent_reply_error(fb_agent *a, uint64_t id, const char *code, const char *msg)
{
    json_t *h = fb_hdr_new("error", id);
    json_object_set_new(h, "code", json_string(code));
    /* A message may quote a path that is not UTF-8; keep the reply valid. */
    json_t *m = json_string(msg);
    json_object_set_new(h, "message", m ? m : json_string("(message not valid UTF-8)"));
    fb_agent_send(a, h, NULL, 0);
    return 0;
}

int fb_agent_reply_ok(fb_agent *a, uint64_t id, json_t *extra, const void *payload, size_t len)
{
    json_t *h = fb_hdr_new("ok", id);
    if (extra) {
        json_object_update(h, extra);
        json_decref(extra);
    }
    fb_agent_send(a, h, payload, len);
    return 0;
}

static int handle_hello(fb_agent *a, const fb_frame *f)
{
    static const char *const fields[] = {"t", "id", "version", "workspace_mib", "tmp_mib",
                                         "nproc", "nofile", "max_output", NULL};
    fb_err err = {{0}};
    uint64_t version = 0, ws = 64, tmp = 64, nproc = 256, nofile = 1024, max_output = 1 << 20;
    if (fb_hdr_only(f->hdr, fields, &err) < 0 ||
        fb_hdr_u64(f->hdr, "version", true, 1000, &version, &err) < 0 ||
        fb_hdr_u64(f->hdr, "workspace_mib", false, 1 << 20, &ws, &err) < 0 ||
        fb_hdr_u64(f->hdr, "tmp_mib", false, 1 << 20, &tmp, &err) < 0 ||
        fb_hdr_u64(f->hdr, "nproc", false, 1 << 20, &nproc, &err) < 0 ||
        fb_hdr_u64(f->hdr, "nofile", false, 1 << 20, &nofile, &err) < 0 ||
        fb_hdr_u64(f->hdr, "max_output", false, FB_MAX_OUTPUT_CAP, &max_output, &err) < 0)
        die(a, "bad hello: %s", err.msg);
    if (version != FB_PROTO_VERSION)
        die(a, "host speaks protocol %llu, agent speaks %d", (unsigned long long)version,
            FB_PROTO_VERSION);
    if (ws == 0 || tmp == 0 || nproc < 8 || nofile < 16)
        die(a, "bad hello: limits too small to run anything");
    if (fb_pid1_mount_scratch(ws, tmp, &err) < 0)
        die(a, "%s", err.msg);
    a->limits.nproc = nproc;
    a->limits.nofile = nofile;
    /* ENOSPC should arrive before SIGXFSZ; fsize is a backstop. */
    a->limits.fsize = ((ws > tmp ? ws : tmp) + 1) * 1024 * 1024;
    a->limits.allow_inet = false;
    a->max_output = max_output;
    if (fb_seccomp_prepare(a->limits.allow_inet, &a->seccomp, &err) < 0)
        die(a, "%s", err.msg);
    a->ready = true;

    struct utsname u;
    uname(&u);
    json_t *h = fb_hdr_new("ready", f->id);
    json_object_set_new(h, "version", json_integer(FB_PROTO_VERSION));
    json_object_set_new(h, "agent", json_string(FB_AGENT_VERSION));
    json_object_set_new(h, "kernel", json_string(u.release));
    json_object_set_new(h, "mode", json_string(a->mode == FB_MODE_VM ? "vm" : "jail"));
    fb_agent_send(a, h, NULL, 0);
    return 0;
}

static int handle_stats(fb_agent *a, const fb_frame *f)
{
    char buf[4096];
    unsigned long long total = 0, avail = 0;
    if (fb_read_file("/proc/meminfo", buf, sizeof buf, NULL) == 0) {
        char *p = strstr(buf, "MemTotal:");
        if (p)
            total = strtoull(p + 9, NULL, 10);
        p = strstr(buf, "MemAvailable:");
        if (p)
            avail = strtoull(p + 13, NULL, 10);
    }
    double up = 0;
    if (fb_read_file("/proc/uptime", buf, sizeof buf, NULL) == 0)
        up = strtod(buf, NULL);
    return fb_agent_reply_ok(a, f->id,
                             json_pack("{s:I, s:I, s:f, s:i}", "mem_total_kib", (json_int_t)total,
                                       "mem_available_kib", (json_int_t)avail, "uptime_s", up,
                                       "running", fb_exec_count(a)),
                             NULL, 0);
}

static void dispatch(fb_agent *a, const fb_frame *f)
{
    const char *t = f->type;
    if (!a->ready) {
        if (strcmp(t, "hello") != 0)
            die(a, "expected hello, got %s", t);
        handle_hello(a, f);
        return;
    }
    if (strcmp(t, "exec") == 0)
        fb_exec_start(a, f);
    else if (strcmp(t, "stdin") == 0)
        fb_exec_stdin(a, f);
    else if (strcmp(t, "signal") == 0)
        fb_exec_signal(a, f);
    else if (strncmp(t, "file_", 5) == 0 &&
             (strcmp(t, "file_put") == 0 || strcmp(t, "file_get") == 0 || strcmp(t, "file_list") == 0 ||
              strcmp(t, "file_stat") == 0 || strcmp(t, "file_remove") == 0 ||
              strcmp(t, "file_mkdir") == 0))
        fb_files_handle(a, f);
    else if (strcmp(t, "stats") == 0)
        handle_stats(a, f);
    else if (strcmp(t, "ping") == 0)
        fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
    else if (strcmp(t, "shutdown") == 0) {
        fb_exec_kill_all(a);
        a->shutdown = true;
        fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
    } else
        fb_agent_reply_error(a, f->id, "unknown_type", "unknown request type");
}

static void serve(fb_agent *a)
{
    enum { MAXFDS = 2 + 4 * FB_MAX_EXECS };
    struct pollfd fds[MAXFDS];
    fb_exec *owner[MAXFDS];
    int which[MAXFDS];
    fb_err err = {{0}};

    for (;;) {
        if (a->shutdown && fb_exec_count(a) == 0) {
            (void)fb_chan_flush_all(&a->chan, 2000, &err);
            fb_pid1_poweroff(a->mode, 0);
        }
        int timeout = fb_exec_tick(a);
        if (a->shutdown && (timeout < 0 || timeout > 100))
            timeout = 100;
        bool accept_input = fb_chan_queued(&a->chan) < 4 * FB_BACKPRESSURE;
        fds[0].fd = a->chan.fd;
        fds[0].events = (short)((accept_input ? POLLIN : 0) | (fb_chan_queued(&a->chan) ? POLLOUT : 0));
        fds[0].revents = 0;
        fds[1].fd = a->sigfd;
        fds[1].events = POLLIN;
        fds[1].revents = 0;
        int n = 2 + fb_exec_pollfds(a, fds + 2, MAXFDS - 2, owner + 2, which + 2);
        int pr = poll(fds, (nfds_t)n, timeout);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            die(a, "poll failed: %s", strerror(errno));
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(a->sigfd, &si, sizeof si) > 0)
                ;
        }
        fb_exec_reap(a);
        for (int i = 2; i < n; i++)
            if (fds[i].revents)
                fb_exec_handle_io(a, owner[i], which[i], fds[i].revents);
        if (fds[0].revents & POLLOUT && fb_chan_flush(&a->chan, &err) < 0)
            die(a, "%s", err.msg);
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            long r = fb_chan_read(&a->chan, &err);
            if (r == -1)
                die(a, "%s", err.msg);
            fb_frame f;
            int got;
            while ((got = fb_decoder_next(&a->chan.dec, &f, &err)) == 1) {
                dispatch(a, &f);
                fb_frame_clear(&f);
            }
            if (got < 0)
                die(a, "%s", err.msg);
            if (a->chan.eof) {
                /* The host is gone: nobody will collect results. */
                fb_exec_kill_all(a);
                fb_pid1_poweroff(a->mode, 0);
            }
            if (r == 0 && (fds[0].revents & POLLHUP) && a->mode == FB_MODE_VM) {
                /* virtio port without a host connection: wait, do not spin. */
                poll(NULL, 0, 50);
            }
        }
        if (fb_chan_queued(&a->chan) && fb_chan_flush(&a->chan, &err) < 0)
            die(a, "%s", err.msg);
    }
}

static void usage(void)
{
    fprintf(stderr, "usage: fb-agent --vm --channel PATH | --jail --channel-fd N\n"
                    "The ForgeBox guest agent; started by the sandbox, not by hand.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    fb_agent agent;
    memset(&agent, 0, sizeof agent);
    agent.chan.fd = -1;
    agent.sigfd = -1;
    const char *channel = NULL;
    int channel_fd = -1;
    bool vm = false, jail = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--vm") == 0)
            vm = true;
        else if (strcmp(argv[i], "--jail") == 0)
            jail = true;
        else if (strcmp(argv[i], "--channel") == 0 && i + 1 < argc)
            channel = argv[++i];
        else if (strcmp(argv[i], "--channel-fd") == 0 && i + 1 < argc) {
            uint64_t v;
            if (fb_parse_u64(argv[++i], 3, 1023, &v) < 0)
                usage();
            channel_fd = (int)v;
        } else
            usage();
    }
    if (vm == jail || (vm && !channel) || (jail && channel_fd < 0))
        usage();
    agent.mode = vm ? FB_MODE_VM : FB_MODE_JAIL;

    fb_err err = {{0}};
    int fd = vm ? open(channel, O_RDWR | O_CLOEXEC | O_NOCTTY) : channel_fd;
    if (fd < 0) {
        fprintf(stderr, "fb-agent: cannot open %s: %s\n", channel, strerror(errno));
        fb_pid1_poweroff(agent.mode, 1);
    }
    fb_set_cloexec(fd, true);
    fb_set_nonblock(fd, true);
    fb_chan_init(&agent.chan, fd);

    umask(022);
    signal(SIGPIPE, SIG_IGN);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    agent.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (agent.sigfd < 0)
        die(&agent, "signalfd: %s", strerror(errno));
    /* The agent must outlive any memory hog it supervises. */
    (void)fb_write_file("/proc/self/oom_score_adj", "-1000", NULL);

    if (fb_pid1_mount_base(agent.mode, &err) < 0)
        die(&agent, "%s", err.msg);
    serve(&agent);
    return 0;
}

/*
 * main.c - fb-agent: the guest side of every sandbox.
 *
 *   fb-agent --vm --channel /dev/vportNpM   (PID 1 of a microVM, from initramfs)
 *   fb-agent --jail --channel-fd N [--net-fd N]  (PID 1 of a jail's pid namespace;
 *                                                 --net-fd: the egress bridge, net.c)
 *
 * It mounts what the sandbox needs, waits for the host's "hello" (which
 * carries the scratch sizes and limits), then serves requests until told to
 * shut down or until the channel breaks, and then ends the sandbox: a VM
 * powers off, a jail's pid namespace exits.  A protocol error from the host
 * is fatal for this sandbox and only this sandbox.
 */
#define _GNU_SOURCE
#include "agent/agent.h"
#include "agent/jheap.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/magic.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/statfs.h>
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
        fb_err err;
        json_t *h = fb_msg_encode_fatal(msg, &err);
        if (h && fb_chan_send(&a->chan, h, NULL, 0, &err) == 0)
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

int fb_agent_reply_error(fb_agent *a, uint64_t id, fb_errc code, const char *msg)
{
    fb_err err;
    json_t *h = fb_msg_encode_error(id, &(fb_msg_error){.code = code, .message = msg}, &err);
    if (!h)
        die(a, "cannot encode an error reply: %s", err.msg);
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

/* A VM's fresh start (hello's seed and time, msg.h): a VM restored from a
 * snapshot resumes with the RNG state and the clock of the moment the
 * snapshot was taken, shared with every other VM restored from it.  The
 * host's bytes are mixed into the input pool and credited, and the CRNG is
 * forced to reseed from it, so every read after this - by the kernel or by
 * any process - differs between restored VMs.  Failing either would leave
 * the VM with someone else's random numbers: that ends the sandbox. */
static void fresh_start(fb_agent *a, const fb_msg_hello *m)
{
    if (a->mode != FB_MODE_VM)
        return; /* a jail shares the host's kernel, RNG and clock */
    if (m->has_seed) {
        struct {
            int entropy_count;
            int buf_size;
            uint8_t buf[FB_HELLO_SEED_BYTES];
        } pool;
        pool.entropy_count = FB_HELLO_SEED_BYTES * 8;
        pool.buf_size = FB_HELLO_SEED_BYTES;
        memcpy(pool.buf, m->seed, sizeof pool.buf);
        int fd = open("/dev/urandom", O_RDWR | O_CLOEXEC);
        if (fd < 0)
            die(a, "cannot open /dev/urandom: %s", strerror(errno));
        if (ioctl(fd, RNDADDENTROPY, &pool) < 0)
            die(a, "cannot add the host's entropy (RNDADDENTROPY): %s", strerror(errno));
        if (ioctl(fd, RNDRESEEDCRNG) < 0)
            die(a, "cannot reseed the guest's RNG (RNDRESEEDCRNG): %s", strerror(errno));
        close(fd);
        explicit_bzero(&pool, sizeof pool);
    }
    if (m->has_time) {
        struct timespec ts = {.tv_sec = (time_t)m->time_sec, .tv_nsec = (long)m->time_nsec};
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            die(a, "cannot set the guest's clock: %s", strerror(errno));
    }
}

static void send_ready(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    struct utsname u;
    uname(&u);
    fb_msg_ready r = {.version = FB_PROTO_VERSION, .agent = FB_AGENT_VERSION, .kernel = u.release,
                      .mode = a->mode == FB_MODE_VM ? "vm" : "jail"};
    json_t *h = fb_msg_encode_ready(f->id, &r, &err);
    if (!h)
        die(a, "%s", err.msg);
    fb_agent_send(a, h, NULL, 0);
}

static int handle_hello(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_hello m;
    if (fb_msg_decode_hello(f, &m, &err) < 0)
        die(a, "bad hello: %s", err.msg);
    if (m.version != FB_PROTO_VERSION)
        die(a, "host speaks protocol %llu, agent speaks %d", (unsigned long long)m.version,
            FB_PROTO_VERSION);
    /* A jail answers at once and sets itself up while the host takes the
     * answer and sends its first request (another CPU: ~0.1 ms of a
     * start).  Nothing is lost: the request is read only after this
     * function returns, so /proc is covered and the agent hardened before
     * anything runs, and a failure below is a "fatal" the host gets
     * instead of the request's answer.  A VM answers only when done: the
     * host may snapshot it at its ready (snapshot.h). */
    if (a->mode == FB_MODE_JAIL) {
        send_ready(a, f);
        if (fb_chan_flush(&a->chan, &err) < 0)
            die(a, "%s", err.msg);
        if (fb_pid1_mount_base(a->mode, &err) < 0)
            die(a, "%s", err.msg);
    }
    fresh_start(a, &m);
    if (fb_pid1_mount_scratch(m.workspace_mib, m.tmp_mib, &err) < 0)
        die(a, "%s", err.msg);
    a->limits.nproc = m.nproc;
    a->limits.nofile = m.nofile;
    /* ENOSPC should arrive before SIGXFSZ; fsize is a backstop. */
    uint64_t larger = m.workspace_mib > m.tmp_mib ? m.workspace_mib : m.tmp_mib;
    a->limits.fsize = (larger + 1) * 1024 * 1024;
    a->limits.allow_inet = m.net;
    a->max_output = m.max_output;
    if (m.net && fb_net_start(a, &err) < 0)
        die(a, "%s", err.msg);
    if (fb_seccomp_prepare(a->limits.allow_inet, &a->seccomp, &err) < 0)
        die(a, "%s", err.msg);
    (void)fb_harden_agent(&a->limits); /* a failure fails each exec (harden.h) */
    fb_exec_prepare(a);
    a->ready = true;
    if (a->mode == FB_MODE_VM)
        send_ready(a, f);
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
    fb_msg_type t = fb_msg_type_of(f);
    if (!a->ready) {
        if (t != FB_MSG_HELLO)
            die(a, "expected hello, got %.32s", f->type);
        handle_hello(a, f);
        return;
    }
    fb_err err = {{0}};
    switch (t) {
    case FB_MSG_EXEC:
        fb_exec_start(a, f);
        return;
    case FB_MSG_STDIN:
        fb_exec_stdin(a, f);
        return;
    case FB_MSG_SIGNAL:
        fb_exec_signal(a, f);
        return;
    case FB_MSG_FILE_PUT:
    case FB_MSG_FILE_GET:
    case FB_MSG_FILE_LIST:
    case FB_MSG_FILE_STAT:
    case FB_MSG_FILE_REMOVE:
    case FB_MSG_FILE_MKDIR:
        fb_files_handle(a, f);
        return;
    case FB_MSG_NET_DATA:
    case FB_MSG_NET_ACK:
    case FB_MSG_NET_CLOSE:
        fb_net_frame(a, f);
        return;
    case FB_MSG_STATS:
    case FB_MSG_PING:
    case FB_MSG_SHUTDOWN:
        if (fb_msg_decode_simple(f, &err) < 0) {
            fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, err.msg);
            return;
        }
        if (t == FB_MSG_STATS) {
            handle_stats(a, f);
            return;
        }
        if (t == FB_MSG_SHUTDOWN) {
            fb_exec_kill_all(a);
            a->shutdown = true;
        }
        fb_agent_reply_ok(a, f->id, NULL, NULL, 0);
        return;
    default:
        fb_agent_reply_error(a, f->id, FB_E_UNKNOWN_TYPE, "unknown request type");
    }
}

static void serve(fb_agent *a)
{
    enum { MAXFDS = 3 + 4 * FB_MAX_EXECS + FB_NET_MAX_STREAMS };
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
        int n = 2;
        int net = -1;
        /* In a VM each connection costs a net_open frame: accept only
         * while the channel has room (the rest wait in the backlog). */
        if (a->net_listen >= 0 && (!a->relay_on || fb_chan_queued(&a->chan) < FB_BACKPRESSURE)) {
            net = n;
            fds[n++] = (struct pollfd){.fd = a->net_listen, .events = POLLIN};
        }
        int first_stream = n, nstreams = 0;
        if (a->relay_on) {
            nstreams = (int)fb_relay_pollfds(&a->relay, fds + n, (size_t)(MAXFDS - n),
                                             fb_chan_queued(&a->chan) < FB_BACKPRESSURE);
            n += nstreams;
        }
        int first_exec = n;
        n += fb_exec_pollfds(a, fds + n, MAXFDS - n, owner + n, which + n);
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
        /* Streams first: reading the channel below may end one in fds. */
        if (nstreams)
            fb_relay_io(&a->relay, fds + first_stream, (size_t)nstreams);
        if (net >= 0 && fds[net].revents)
            fb_net_accept(a);
        for (int i = first_exec; i < n; i++)
            if (fds[i].revents)
                fb_exec_handle_io(a, owner[i], which[i], fds[i].revents);
        /* After the pipes: a command whose output ended in this round and
         * whose leader exited is answered now, not one poll later. */
        fb_exec_reap(a);
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
        fb_exec_idle(a);
    }
}

/* Starts reading what nearly every command needs (the dynamic loader, libc,
 * the shell) while the host is still saying hello, where the root's page
 * cache is this sandbox's own (a VM's disk; a jail whose root is an EROFS
 * superblock of its own, on kernels where the jail cannot share one), so
 * that the first exec does not wait for these reads one page fault at a
 * time.  A jail whose root is an overlay of the image's shared mount
 * (sandbox/jailroot.c) reads through a page cache that earlier jails of
 * the image already filled: nothing to do (the reads cost the CPU the
 * jail's start needs).  posix_fadvise(WILLNEED) reads ahead only up to
 * the readahead window (128 KiB), so in a jail a short-lived child of the
 * agent reads the loader and libc whole, on another CPU while the agent
 * mounts and answers hello (the serve loop reaps it like any orphan); the
 * rest, and all of it in a VM (whose page cache a snapshot keeps), is
 * readahead.  A missing file is fine. */
static void prefetch_common(fb_agent_mode mode)
{
    static const char *const whole[] = {
        "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/etc/ld.so.cache",
        "/lib/x86_64-linux-gnu/libc.so.6", NULL,
    };
    static const char *const ahead[] = {"/bin/sh", "/bin/bash", "/usr/bin/true", NULL};
    struct statfs root;
    if (mode == FB_MODE_JAIL && statfs("/", &root) == 0 && root.f_type == OVERLAYFS_SUPER_MAGIC)
        return;
    if (mode == FB_MODE_JAIL && fork() == 0) {
        static char buf[128 * 1024];
        for (const char *const *f = whole; *f; f++) {
            int fd = open(*f, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            while (read(fd, buf, sizeof buf) > 0)
                ;
            close(fd);
        }
        _exit(0);
    }
    for (int list = mode == FB_MODE_JAIL ? 1 : 0; list < 2; list++)
        for (const char *const *f = list ? ahead : whole; *f; f++) {
            int fd = open(*f, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
                (void)posix_fadvise(fd, 0, 0, POSIX_FADV_WILLNEED);
                close(fd);
            }
        }
}

static void usage(void)
{
    fprintf(stderr, "usage: fb-agent --vm --channel PATH | --jail --channel-fd N [--net-fd N]\n"
                    "The ForgeBox guest agent; started by the sandbox, not by hand.\n");
    exit(2);
}

int main(int argc, char **argv)
{
    fb_jheap_install(); /* before any json_t */
    fb_agent agent;
    memset(&agent, 0, sizeof agent);
    agent.chan.fd = -1;
    agent.sigfd = -1;
    agent.net_fd = agent.net_listen = -1;
    agent.limits.landlock_ruleset = -1;
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
        } else if (strcmp(argv[i], "--net-fd") == 0 && i + 1 < argc) {
            uint64_t v;
            if (fb_parse_u64(argv[++i], 3, 1023, &v) < 0)
                usage();
            agent.net_fd = (int)v;
            fb_set_cloexec(agent.net_fd, true);
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
    /* The agent must outlive any memory hog it supervises.  A VM's agent,
     * the global init, which the OOM killer never picks, takes the tool
     * processes' 1000 at hello for its children to inherit (exec.c,
     * oom_given). */
    (void)fb_write_file("/proc/self/oom_score_adj", "-1000", NULL);

    prefetch_common(agent.mode);
    /* A jail's: once it has answered hello (handle_hello). */
    if (agent.mode == FB_MODE_VM && fb_pid1_mount_base(agent.mode, &err) < 0)
        die(&agent, "%s", err.msg);
    serve(&agent);
    return 0;
}

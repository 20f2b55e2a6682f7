/*
 * exec.c - running tool commands: fork, harden, exec, stream, time out.
 *
 * Each command runs in its own session (so its process group is the unit
 * we signal and kill), with stdout and stderr on pipes that the loop reads
 * and forwards as frames, and stdin either a pipe fed from "stdin" frames
 * (with an ack-based window so the host cannot make us buffer without
 * bound) or /dev/null.  The child leaves the agent why it could not exec or
 * harden itself (child_args), so "command not found" and "could not drop
 * privileges" are answers, not silent 127s.
 *
 * A command is finished when its leader has exited and both output pipes
 * are closed.  When the leader exits, whatever it left in its process group
 * is killed; processes that escaped the group (setsid) lose their hold on
 * the pipes after a short grace period and die with the sandbox.
 */
#define _GNU_SOURCE
#include "agent/agent.h"
#include "agent/jheap.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_GRACE_NS (300ull * 1000000ull)
#define READ_CHUNK (32u * 1024u)
#define VMSTAT_MAX 8192u
/* The spawned child's stack (spawn_process): its deepest use is
 * exec_file's argv for /bin/sh (FB_MAX_ARGV + 2 pointers, 32 KiB) under
 * exec_search's path buffer, with room for the rest and the guard page.
 * Pages never touched cost nothing. */
#define CHILD_STACK (128u * 1024u)
_Static_assert(CHILD_STACK >= 4096u + (FB_MAX_ARGV + 2u) * sizeof(char *) + PATH_MAX + 32u * 1024u,
               "the spawned child's stack is too small for its longest argv");
/* How long a command's child may take from its clone to its execve
 * before it is killed (spawn_process), at most: ~2 ms is usual under
 * TCG.  A command's own timeout, if shorter, is the limit. */
#define CHILD_WATCHDOG_MS 5000ull
/* The watchdog after a child was held until it died before its execve,
 * until a child reaches its execve again: held children queue the
 * agent's later requests behind them, and k held ones at 5 s each would
 * outlast the host's slack for an answer; ~2 ms is usual, 0.5 s ample.
 * The most execs one sandbox can have queued, all held, stay inside it. */
#define CHILD_WATCHDOG_AFTER_HOLD_MS 500ull
_Static_assert(CHILD_WATCHDOG_MS + (FB_MAX_EXECS - 1) * CHILD_WATCHDOG_AFTER_HOLD_MS < FB_EXEC_SLACK_MS,
               "a run of held children would outlast the host's slack (proto/msg.h)");

/* The agent's own read buffers (command output, /proc/vmstat), in pages
 * marked MADV_DONTFORK, not on the stack.  A fork write-protects every
 * page of the agent, so each page the agent writes between two execs
 * takes a copy-on-write fault once per exec; a 32 KiB buffer on the stack
 * spread the loop's calls over three more stack pages than it needs.
 * Pages left out of the fork are never write-protected, and no child
 * touches these: it only reads its argv, env and the limits before its
 * execve.  ~40 us a fault in a VM under TCG (bench/README.md, "Session 7:
 * agent exec").  Since session 8 the child is spawned without a fork
 * (spawn_process), so nothing is write-protected per exec any more; the
 * buffers were kept as they are.  If the mapping cannot be made, the
 * static fallback works the same. */
static uint8_t scratch_fallback[READ_CHUNK + VMSTAT_MAX];
static uint8_t *scratch = scratch_fallback;
#define OUTPUT_BUF (scratch)
#define VMSTAT_BUF ((char *)scratch + READ_CHUNK)

/* What the child leaves the agent when it cannot exec (child_args). */
struct child_failure {
    int err_no;
    int stage; /* 0 = hardening/setup, 1 = execve */
    char msg[400];
};

struct fb_exec {
    uint64_t id;
    pid_t pid;
    int out_fd, err_fd, in_fd;
    bool start_failed;
    bool held_at_start;   /* the child died before its execve, not failing (spawn_process) */
    uint64_t watchdog_ms; /* its watchdog's time */
    struct child_failure fail;
    uint8_t *in_buf;
    size_t in_len;
    bool in_eof;          /* host said stdin is done */
    uint64_t in_unacked;  /* bytes written to the pipe not yet acked */
    uint64_t start_ns, deadline_ns, exit_ns;
    uint64_t output, max_output;
    bool truncated, exited, timed_out;
    int wstatus;
    uint64_t oom_before;
};

/* The commands' records, one per slot of a->execs, beside the read
 * buffers (MADV_DONTFORK, fb_exec_prepare) rather than from malloc: a
 * record is created right after a fork and written all through the
 * command's life, and a heap page it shared was a copy-on-write fault per
 * exec; with musl's malloc, whose group of this size was unmapped with the
 * last record, also a fresh page each time (bench/README.md, "Session 7:
 * fb-agent on musl").  No child reads them. */
static fb_exec exec_pool_fallback[FB_MAX_EXECS];
static fb_exec *exec_pool = exec_pool_fallback;

#define DEFAULT_PATH "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *const default_env[] = {
    DEFAULT_PATH,
    "HOME=/workspace",
    "USER=forgebox",
    "LOGNAME=forgebox",
    "LANG=C.UTF-8",
    "SHELL=/bin/bash",
    NULL,
};

/* /proc/vmstat, opened once (fb_exec_prepare): one pread per exec instead
 * of an open (a /proc path walk), two reads and a close.  A seq_file
 * regenerates its text for a read at offset 0. */
static int vmstat_fd = -1;

/* /dev/null, read-only, opened once: the stdin of every command that has
 * none (the child dup2s it), instead of an open and a close per exec.
 * The commands share its open file description: the flags one may set on
 * it (O_NONBLOCK) change nothing a read of /dev/null returns. */
static int null_fd = -1;

/* The next child's watchdog (spawn_process): CHILD_WATCHDOG_MS, or
 * CHILD_WATCHDOG_AFTER_HOLD_MS while children are being held. */
static uint64_t watchdog_ms = CHILD_WATCHDOG_MS;

/* /workspace, the default cwd, opened once (O_PATH) after hello mounted
 * it: the child's fchdir skips chdir's path walk (~50 us of a VM exec
 * under TCG).  The same check for the tool user (search permission on
 * the directory, file_permission(MAY_EXEC | MAY_CHDIR)); "/" above it is
 * searchable by all, and nothing mounts over /workspace after hello (the
 * tool user cannot).  A request naming a cwd, even /workspace, is
 * changed to by its path. */
static int workspace_fd = -1;

static uint64_t read_oom_kills(void)
{
    char *buf = VMSTAT_BUF;
    ssize_t n = vmstat_fd >= 0 ? pread(vmstat_fd, buf, VMSTAT_MAX - 1, 0) : -1;
    if (n >= 0 && (size_t)n < VMSTAT_MAX - 1)
        buf[n] = '\0'; /* empty in a jail: /proc/vmstat is covered there */
    else if (fb_read_file("/proc/vmstat", buf, VMSTAT_MAX, NULL) < 0)
        return 0;
    const char *p = strstr(buf, "\noom_kill ");
    return p ? strtoull(p + 10, NULL, 10) : 0;
}

/* The OOM count a command starting now compares its end with: read when
 * the previous command's exit had been sent (fb_exec_idle) or at hello,
 * not at each start: the read is ~0.14 ms of a VM exec under TCG, and
 * with the child spawned by vfork (spawn_process) nothing overlaps it.
 * What that gives up: an OOM kill between the previous answer and this
 * start (of a process an earlier command left behind, or of another
 * running command) marks this command's SIGKILL, if it dies by one, as
 * "out of memory" too; a count read at the start had the same blur for
 * kills during the command's life.  No OOM kill of the command goes
 * unreported: the count only grows. */
static uint64_t oom_seen;
static bool oom_stale = true;

static uint64_t oom_baseline(void)
{
    if (oom_stale) {
        oom_seen = read_oom_kills();
        oom_stale = false;
    }
    return oom_seen;
}

void fb_exec_idle(fb_agent *a)
{
    if (oom_stale && !fb_chan_queued(&a->chan))
        (void)oom_baseline();
}

int fb_exec_count(const fb_agent *a)
{
    int n = 0;
    for (int i = 0; i < FB_MAX_EXECS; i++)
        n += a->execs[i] != NULL;
    return n;
}

static fb_exec *find_exec(fb_agent *a, uint64_t id)
{
    for (int i = 0; i < FB_MAX_EXECS; i++)
        if (a->execs[i] && a->execs[i]->id == id)
            return a->execs[i];
    return NULL;
}

/* envp, built once from the request's pairs plus the defaults it does not
 * override (free_env). */
static const char *const proxy_env[] = {
    "HTTP_PROXY=" FB_NET_PROXY_URL, "HTTPS_PROXY=" FB_NET_PROXY_URL, "ALL_PROXY=" FB_NET_PROXY_URL,
    "http_proxy=" FB_NET_PROXY_URL, "https_proxy=" FB_NET_PROXY_URL, "all_proxy=" FB_NET_PROXY_URL,
    "NO_PROXY=localhost,127.0.0.1", "no_proxy=localhost,127.0.0.1", NULL,
};

/* The defaults, plus the proxy's variables with a network grant. */
static const char *default_at(size_t d, bool net)
{
    size_t nbase = sizeof default_env / sizeof default_env[0] - 1;
    if (d < nbase)
        return default_env[d];
    return net ? proxy_env[d - nbase] : NULL;
}

/* The array and the request's strings are one block from jheap.c (kept
 * for the next exec, not unmapped by musl's malloc); the defaults are
 * pointed to, not copied. */
static char **build_env(const fb_msg_exec *m, bool net, fb_err *err)
{
    size_t ndef = sizeof default_env / sizeof default_env[0] - 1;
    if (net)
        ndef += sizeof proxy_env / sizeof proxy_env[0] - 1;
    size_t slots = ndef + m->nenv + 1, bytes = slots * sizeof(char *);
    for (size_t i = 0; i < m->nenv; i++)
        bytes += strlen(m->env[i].key) + strlen(m->env[i].value) + 2;
    char **env = fb_jheap_alloc(bytes);
    if (!env) {
        fb_fail(err, "out of memory");
        return NULL;
    }
    char *text = (char *)(env + slots);
    size_t n = 0;
    for (size_t i = 0; i < m->nenv; i++) {
        size_t kl = strlen(m->env[i].key), vl = strlen(m->env[i].value);
        env[n++] = text;
        memcpy(text, m->env[i].key, kl);
        text[kl] = '=';
        memcpy(text + kl + 1, m->env[i].value, vl + 1);
        text += kl + vl + 2;
    }
    for (size_t d = 0; d < ndef; d++) {
        const char *def = default_at(d, net);
        size_t klen = strcspn(def, "=");
        bool overridden = false;
        for (size_t i = 0; i < m->nenv && !overridden; i++)
            overridden = strlen(m->env[i].key) == klen && memcmp(m->env[i].key, def, klen) == 0;
        if (!overridden)
            env[n++] = (char *)def;
    }
    env[n] = NULL;
    return env;
}

static void free_env(char **env)
{
    fb_jheap_free(env);
}

/* What the agent hands its child (spawn_process), and where the child,
 * which runs in the agent's memory until its execve, leaves why it could
 * not exec: the agent reads it when the clone returns, as glibc's
 * posix_spawn does, with no report pipe to make, poll and close. */
struct child_args {
    const fb_agent *a;
    const char **argv;
    char **env;
    bool own_path;
    const char *cwd;
    int cwd_fd; /* the default cwd's (workspace_fd), or -1: cwd by its path */
    int in_fd, out_fd, err_fd;
    uint64_t watchdog_ms;
    bool oom_inherited; /* it has the agent's score of 1000 (oom_given) */
    bool execing; /* set by the child as it calls execve */
    bool failed; /* set last, by the child */
    struct child_failure fail;
};

static void child_fail(struct child_args *c, int stage, int err_no, const char *msg) __attribute__((noreturn));
static void child_fail(struct child_args *c, int stage, int err_no, const char *msg)
{
    c->fail.err_no = err_no;
    c->fail.stage = stage;
    snprintf(c->fail.msg, sizeof c->fail.msg, "%s", msg);
    c->failed = true;
    _exit(stage == 1 ? (err_no == ENOENT ? 127 : 126) : 125);
}

/* execve, and for a file the kernel cannot run (ENOEXEC: a script without
 * "#!") /bin/sh with it, as glibc's execvp does (and POSIX asks); musl's
 * execvp does not.  PATH is searched here, with either libc (Makefile,
 * AGENT_LIBC), the way both libcs do: an empty element is the current
 * directory, EACCES is reported if no candidate ran but one existed, any
 * other failure but ENOENT/ENOTDIR ends the search.  Here rather than
 * execvp because the libcs' execvp search the PATH of the caller's
 * `environ`, which this child may not write: it runs in the agent's
 * memory (spawn_process).  Only the stack and system calls. */
static void exec_file(const char *file, char *const argv[], char *const envp[])
{
    execve(file, argv, envp);
    if (errno != ENOEXEC)
        return;
    size_t argc = 0;
    while (argv[argc])
        argc++;
    const char *sh_argv[argc + 2];
    sh_argv[0] = "/bin/sh";
    sh_argv[1] = file;
    for (size_t i = 1; i <= argc; i++)
        sh_argv[i + 1] = argv[i];
    execve(sh_argv[0], (char *const *)sh_argv, envp);
    errno = ENOEXEC;
}

static void exec_search(const char *file, char *const argv[], char *const envp[], const char *path)
{
    if (!*file) {
        errno = ENOENT;
        return;
    }
    if (strchr(file, '/')) {
        exec_file(file, argv, envp);
        return;
    }
    size_t k = strlen(file);
    bool seen_eacces = false;
    for (const char *p = path;;) {
        const char *z = strchrnul(p, ':');
        size_t l = (size_t)(z - p);
        char b[PATH_MAX];
        if (l + 1 + k + 1 <= sizeof b) {
            memcpy(b, p, l);
            b[l] = '/';
            memcpy(b + l + (l > 0), file, k + 1);
            exec_file(b, argv, envp);
            if (errno == EACCES)
                seen_eacces = true;
            else if (errno != ENOENT && errno != ENOTDIR)
                return;
        }
        if (!*z)
            break;
        p = z + 1;
    }
    errno = seen_eacces ? EACCES : ENOENT;
}

static void run_child(struct child_args *c)
{
    const fb_agent *a = c->a;
    const char **argv = c->argv;
    char **env = c->env;
    /* The watchdog first, while still root: a SIGKILL in c->watchdog_ms
     * from a POSIX timer of this process, which execve deletes
     * (spawn_process says why).  The system calls: libc's timer_create
     * may start a thread for other notifications. */
    struct sigevent wd = {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGKILL};
    int timer = -1;
    struct itimerspec when = {.it_value = {.tv_sec = (time_t)(c->watchdog_ms / 1000),
                                           .tv_nsec = (long)(c->watchdog_ms % 1000) * 1000000}};
    if (syscall(SYS_timer_create, CLOCK_MONOTONIC, &wd, &timer) < 0 ||
        syscall(SYS_timer_settime, timer, 0, &when, NULL) < 0)
        child_fail(c, 0, errno, "cannot arm the start watchdog");
    /* Every signal blocked until execve is near (SIGKILL and SIGSTOP
     * cannot be): between the uid change and harden.c's
     * PR_SET_DUMPABLE 0 a tool process could otherwise signal this child
     * into a core dump, and a kernel before 5.16 kills every process
     * sharing the dumping memory, the agent with it, before it looks at
     * RLIMIT_CORE (review, session 8).  The system call, not
     * sigprocmask(): no libc code the agent's loop does not run already,
     * so none of its pages faults in here. */
    uint64_t all = ~0ull, none = 0;
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, NULL, sizeof all);
    /* Every disposition at SIG_DFL: execve resets handlers, not SIG_IGN;
     * fb_exec_prepare noted which are not (one call each, not NSIG).  The
     * system call itself, because glibc refuses signals 32 and 33 (its
     * own): one the agent inherited ignored (execve keeps SIG_IGN, from
     * whoever started the manager) would reach the command ignored. */
    for (int s = 1; s <= 64; s++)
        if (a->child_reset >> (s - 1) & 1) {
            struct {
                void (*handler)(int);
                unsigned long flags;
                void (*restorer)(void);
                uint64_t mask;
            } dfl = {.handler = SIG_DFL};
            (void)syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof dfl.mask);
        }
    if (setsid() < 0)
        child_fail(c, 0, errno, "setsid failed");
    if (dup2(c->in_fd, 0) < 0 || dup2(c->out_fd, 1) < 0 || dup2(c->err_fd, 2) < 0)
        child_fail(c, 0, errno, "cannot set up stdio");
    /* Only 0, 1, 2 survive; every agent fd is close-on-exec already, this
     * is the backstop. */
    if (syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) < 0)
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
    fb_err err = {{0}};
    if (fb_harden_tool_process(&a->limits, &a->seccomp, c->oom_inherited, &err) < 0)
        child_fail(c, 0, errno, err.msg);
    /* By its path if the fd is gone (the close loop above, kernels
     * before 5.9). */
    if ((c->cwd_fd < 0 || fchdir(c->cwd_fd) < 0) && chdir(c->cwd) < 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "cannot change directory to %.256s: %s", c->cwd, strerror(errno));
        child_fail(c, 0, errno, msg);
    }
    const char *path = DEFAULT_PATH + 5;
    for (char **p = env; c->own_path && *p; p++)
        if (strncmp(*p, "PATH=", 5) == 0)
            path = *p + 5;
    /* The command starts with no signal blocked; one a tool process sent
     * meanwhile is delivered here, to a non-dumpable child. */
    (void)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
    c->execing = true;
    exec_search(argv[0], (char *const *)argv, env, path);
    char msg[300];
    snprintf(msg, sizeof msg, "%.200s: %s", argv[0],
             errno == ENOENT ? "command not found" : strerror(errno));
    child_fail(c, 1, errno, msg);
}

/* A new process for a command, the way posix_spawn makes one:
 * clone(CLONE_VM | CLONE_VFORK) on a stack of its own (child_stack).  The
 * child runs in the agent's memory, and the agent sleeps in the kernel
 * until the child has called execve (which gives it a memory of its own)
 * or exited.  Nothing is copied: no page tables, no write-protected
 * agent pages whose next write is a copy-on-write fault, and the agent's
 * pages the child runs through are already there.  A fork cost an exec
 * ~20 guest page faults and the copy (~40 us a fault in a VM under TCG;
 * bench/README.md, "Session 8: VM exec").
 *
 * What running in the agent's memory asks of the child (run_child,
 * harden.c, exec_search): it writes its own stack, errno (which the
 * agent reads at once after the clone) and child_args's execing, failed
 * and fail; it never writes the agent's other globals (no `environ`, no
 * malloc: the PATH search is exec_search's).  One exception, with a glibc
 * build only: glibc's strerror (a failure's message) takes and releases
 * its locale lock, which no code of the suspended agent can be holding
 * (one thread, not inside strerror at the clone).  Each of its own settings is its own all the same:
 * signal mask and dispositions, fds, cwd, rlimits (no CLONE_SIGHAND,
 * CLONE_FILES, CLONE_FS, CLONE_THREAD), credentials, no_new_privs,
 * Landlock domain and seccomp filter (per task), and the OOM score (the
 * kernel gives a vfork child its own, and never picks one as the OOM
 * killer's victim).  Right after the uid change harden.c makes the shared
 * memory non-dumpable (every signal blocked till then and until just
 * before execve), so a tool process cannot ptrace or read the child
 * (ptrace and process_vm_* are refused by the filter besides), and the
 * agent's memory stays so: it is root, nothing changes for it.
 *
 * What vfork adds: between its uid change and execve the child can be
 * stopped (SIGSTOP, kill(-1, ...)) by any process of the tool user, such
 * as one an earlier exec left behind, and the agent would sleep with it
 * (earlier sessions kept fork() for this).  So the child arms a POSIX
 * timer first, while still root, that kills it when the command's
 * timeout or CHILD_WATCHDOG_MS has passed, whichever comes first: execve
 * deletes the timer, a tool process cannot (it is not its own), and
 * SIGKILL ends a stopped process too.  A stopped child thus holds the
 * agent for at most 5 s, far inside the host's slack before it calls a
 * sandbox unresponsive (execlog.c).  The command's answer is "timed out"
 * when its timeout was the limit (as when the agent's deadline killed a
 * stopped forked child), else a setup failure saying it was stopped
 * (send_exit).  With Landlock's signal scope (Linux 6.12, a jail on a
 * recent host) the tool's processes cannot signal the child at all.
 *
 * Either way it is the system call (the libcs' clone() is its wrapper),
 * without glibc's fork bookkeeping.  That bookkeeping (the thread id
 * written into the child's TLS, its robust-list, stdio and abort locks
 * reset, the atfork handlers) matters only to a multi-threaded parent or a
 * child that goes on running the parent's program; the agent has one
 * thread and registers no handler, and its child only execs.  glibc's
 * raise() and abort() ask the kernel for the thread id, so a fortify
 * failure in the child still kills the child alone.
 *
 * With musl (Makefile, AGENT_LIBC) the child's thread block is the
 * agent's, with the agent's thread id, which musl's raise(), abort() and
 * pthread_kill() use, and musl's set*id() go through __synccall, which
 * would signal the agent's other threads had it any.  So the child calls
 * none of them: between the clone and execve it makes system calls
 * (syscall(), setsid, dup2, close, open, write, setrlimit = prlimit64,
 * prctl, chdir, getresuid, execve), the uid/gid changes as syscall()
 * (harden.c), snprintf/strerror (no locks: single-threaded, and musl's
 * stack-protector failure is a trap instruction, not raise()), and
 * exec_search above.  glibc_abi.c's fortify failure asks the kernel for
 * the tid too.  The agent never starts a thread: the link of
 * build/fb-agent fails if pthread_create is in it (Makefile). */
static uint8_t child_stack[CHILD_STACK] __attribute__((aligned(4096))); /* lowest page: guard */

static int child_main(void *p)
{
    run_child(p);
    return 125; /* not reached: run_child execs or exits */
}

/* The child's pid, or -1 with errno.  When it returns the child has
 * called execve or exited (c->failed says why). */
static pid_t spawn_process(struct child_args *c)
{
    return clone(child_main, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
}

/* The tool processes' OOM score, given to a VM's child by the clone: a
 * VM's agent holds 1000 itself (fb_exec_prepare, at hello), and a
 * child's score and its floor are copied from its parent's at the clone
 * (the agent is root: its 1000 is a floor too, as when the child wrote
 * it while still root).  So the child skips its own open of
 * /proc/self/oom_score_adj, a walk of /proc through its new pid's
 * directory (~0.25 ms of an exec under TCG, bench/README.md "Session 8:
 * VM exec", second round), and the write.  The agent's own score means
 * nothing in a VM: it is the global init, which the OOM killer never
 * picks whatever its score, and it starts no process but the commands'
 * children.  A jail's agent is init of its pid namespace only and could
 * be picked at 1000: it keeps -1000 (main.c), and a jail's child writes
 * its score itself (native there, ~10 us).  If the write fails, each
 * child writes its own. */
static bool oom_given;

/* A "Name:\thex" mask of /proc/self/status, or -1. */
static int status_mask(const char *status, const char *name, uint64_t *out)
{
    const char *p = strstr(status, name);
    if (!p)
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p + strlen(name), &end, 16);
    if (errno || end == p + strlen(name) || *end != '\n')
        return -1;
    *out = v;
    return 0;
}

void *fb_agent_map_unforked(size_t len)
{
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    (void)madvise(m, len, MADV_DONTFORK);
    return m;
}

void fb_exec_prepare(fb_agent *a)
{
    if (vmstat_fd < 0)
        vmstat_fd = open("/proc/vmstat", O_RDONLY | O_CLOEXEC);
    (void)oom_baseline();
    void *m;
    if (exec_pool == exec_pool_fallback && (m = fb_agent_map_unforked(sizeof exec_pool_fallback)))
        exec_pool = m;
    if (scratch == scratch_fallback && (m = fb_agent_map_unforked(sizeof scratch_fallback)))
        scratch = m;
    /* The spawned child's stack overflows into a fault, not the agent's
     * data (a failure leaves 4 KiB less margin, nothing else). */
    (void)mprotect(child_stack, 4096, PROT_NONE);
    if (null_fd < 0)
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (workspace_fd < 0)
        workspace_fd = open("/workspace", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (!oom_given && a->mode == FB_MODE_VM && getpid() == 1)
        oom_given = fb_write_file("/proc/self/oom_score_adj", "1000", NULL) == 0;
    /* Ignored and caught signals, bit N-1 for signal N: one read instead
     * of a sigaction query per signal. */
    char status[4096];
    uint64_t ign, cgt;
    if (fb_read_file("/proc/self/status", status, sizeof status, NULL) == 0 &&
        status_mask(status, "\nSigIgn:\t", &ign) == 0 && status_mask(status, "\nSigCgt:\t", &cgt) == 0) {
        a->child_reset = ign | cgt;
        return;
    }
    a->child_reset = ~0ull; /* cannot tell: reset every one */
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void exec_free(fb_exec *e)
{
    close_fd(&e->out_fd);
    close_fd(&e->err_fd);
    close_fd(&e->in_fd);
    free(e->in_buf);
    e->in_buf = NULL; /* the record itself is its slot's (exec_pool) */
}

static void send_exit_msg(fb_agent *a, uint64_t id, const fb_msg_exit *m)
{
    fb_err err;
    json_t *h = fb_msg_encode_exit(id, m, &err);
    if (!h)
        fb_agent_die(a, "cannot encode an exit: %s", err.msg);
    fb_agent_send(a, h, NULL, 0);
}

/* Sends an exit record for a command that never started. */
static int reply_not_started(fb_agent *a, uint64_t id, int code, fb_errc reason, const char *msg)
{
    fb_msg_exit m = {.started = false, .code = code, .error = reason, .message = msg};
    send_exit_msg(a, id, &m);
    return 0;
}

int fb_exec_start(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    if (find_exec(a, f->id))
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, "a command with this id is running");
    int slot = -1;
    for (int i = 0; i < FB_MAX_EXECS; i++)
        if (!a->execs[i]) {
            slot = i;
            break;
        }
    if (slot < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BUSY, "too many commands running in this sandbox");

    fb_msg_exec m;
    if (fb_msg_decode_exec(f, &m, &err) < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, err.msg);
    const char *cwd = m.cwd ? m.cwd : "/workspace";
    uint64_t timeout_ms = m.timeout_ms, max_output = m.max_output ? m.max_output : a->max_output;
    bool want_stdin = m.stdin_pipe, own_path = false;
    for (size_t i = 0; i < m.nenv && !own_path; i++)
        own_path = strcmp(m.env[i].key, "PATH") == 0;
    const char **argv = (const char **)m.argv;
    char **env = build_env(&m, a->net_listen >= 0, &err);
    if (!env) {
        fb_msg_exec_free(&m);
        return fb_agent_reply_error(a, f->id, FB_E_RESOURCE, err.msg);
    }

    int out[2] = {-1, -1}, errp[2] = {-1, -1}, in[2] = {-1, -1};
    if (!want_stdin && null_fd < 0)
        null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 ||
        (want_stdin ? pipe2(in, O_CLOEXEC) : null_fd) < 0) {
        int e = errno;
        int fds[] = {out[0], out[1], errp[0], errp[1], in[0], in[1]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        fb_msg_exec_free(&m);
        free_env(env);
        return fb_agent_reply_error(a, f->id, FB_E_RESOURCE, strerror(e));
    }
    struct child_args ca = {.a = a, .argv = argv, .env = env, .own_path = own_path, .cwd = cwd,
                            .cwd_fd = m.cwd ? -1 : workspace_fd,
                            .in_fd = want_stdin ? in[0] : null_fd, .out_fd = out[1], .err_fd = errp[1],
                            .watchdog_ms = watchdog_ms < timeout_ms ? watchdog_ms : timeout_ms};
    uint64_t spawn_ns = fb_now_ns();
    ca.oom_inherited = oom_given;
    pid_t pid = spawn_process(&ca);
    int fork_errno = errno; /* shared with the child: read first */
    /* Neither failed nor reached execve: it died before, held by a tool
     * process until its watchdog fired (or killed meanwhile).  Or it was
     * in its PATH search (execing), where a failed candidate returns to
     * user mode and a stop can land too: a successful execve deletes the
     * timer before the agent wakes, so a spawn as long as the watchdog
     * was a hold. */
    bool held = pid >= 0 && !ca.failed &&
                (!ca.execing || fb_now_ns() - spawn_ns >= ca.watchdog_ms * 1000000ull);
    if (pid >= 0)
        watchdog_ms = held ? CHILD_WATCHDOG_AFTER_HOLD_MS : CHILD_WATCHDOG_MS;
    fb_msg_exec_free(&m);
    free_env(env);
    close(out[1]);
    close(errp[1]);
    if (want_stdin)
        close(in[0]);
    if (pid < 0) {
        close(out[0]);
        close(errp[0]);
        if (want_stdin)
            close(in[1]);
        return fb_agent_reply_error(a, f->id, FB_E_RESOURCE, strerror(fork_errno));
    }

    /* A child that could not exec has exited and left its reason; the
     * answer goes when it is reaped, as for any command.  The deadline
     * runs from the spawn: a child stopped until its watchdog fired at
     * the command's timeout is past it already (fb_exec_tick). */
    fb_exec *e = &exec_pool[slot];
    memset(e, 0, sizeof *e);
    e->id = f->id;
    e->pid = pid;
    e->out_fd = out[0];
    e->err_fd = errp[0];
    e->in_fd = want_stdin ? in[1] : -1;
    if (ca.failed) {
        e->start_failed = true;
        e->fail = ca.fail;
        e->fail.msg[sizeof e->fail.msg - 1] = '\0';
    }
    e->held_at_start = held;
    e->watchdog_ms = ca.watchdog_ms;
    e->start_ns = spawn_ns;
    e->deadline_ns = e->start_ns + timeout_ms * 1000000ull;
    e->max_output = max_output;
    e->oom_before = oom_baseline(); /* read when idle (fb_exec_idle) */
    /* FIONBIO: one call per fd where F_GETFL + F_SETFL are two. */
    int on = 1;
    (void)ioctl(e->out_fd, FIONBIO, &on);
    (void)ioctl(e->err_fd, FIONBIO, &on);
    if (e->in_fd >= 0)
        (void)ioctl(e->in_fd, FIONBIO, &on);
    a->execs[slot] = e;
    return 0;
}

static void send_output(fb_agent *a, fb_exec *e, fb_msg_type stream, const void *data, size_t len)
{
    fb_err err;
    json_t *h = fb_msg_encode_simple(stream, e->id, &err);
    if (!h)
        fb_agent_die(a, "%s", err.msg);
    fb_agent_send(a, h, data, len);
}

static void read_output(fb_agent *a, fb_exec *e, int *fd, fb_msg_type stream)
{
    uint8_t *buf = OUTPUT_BUF;
    ssize_t n = read(*fd, buf, READ_CHUNK);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        close_fd(fd);
        return;
    }
    if (n == 0) {
        close_fd(fd);
        return;
    }
    if (e->truncated)
        return; /* keep draining so the writer does not block; drop it */
    size_t len = (size_t)n;
    if (e->output + len > e->max_output) {
        size_t keep = (size_t)(e->max_output - e->output);
        if (keep)
            send_output(a, e, stream, buf, keep);
        char marker[128];
        int m = snprintf(marker, sizeof marker,
                         "\n[forgebox: output truncated: limit of %llu bytes reached]\n",
                         (unsigned long long)e->max_output);
        send_output(a, e, stream, marker, (size_t)m);
        e->output = e->max_output;
        e->truncated = true;
        return;
    }
    e->output += len;
    send_output(a, e, stream, buf, len);
}

static void write_stdin(fb_agent *a, fb_exec *e)
{
    while (e->in_fd >= 0 && e->in_len > 0) {
        ssize_t n = write(e->in_fd, e->in_buf, e->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            /* EPIPE: the command stopped reading; discard the rest. */
            e->in_len = 0;
            close_fd(&e->in_fd);
            break;
        }
        memmove(e->in_buf, e->in_buf + n, e->in_len - (size_t)n);
        e->in_len -= (size_t)n;
        e->in_unacked += (uint64_t)n;
    }
    if (e->in_unacked >= 64 * 1024 || (e->in_unacked && e->in_len == 0)) {
        fb_err err;
        json_t *h = fb_msg_encode_stdin_ack(e->id, &(fb_msg_stdin_ack){.bytes = e->in_unacked}, &err);
        if (!h)
            fb_agent_die(a, "cannot encode a stdin_ack: %s", err.msg);
        fb_agent_send(a, h, NULL, 0);
        e->in_unacked = 0;
    }
    if (e->in_fd >= 0 && e->in_len == 0 && e->in_eof)
        close_fd(&e->in_fd);
}

int fb_exec_stdin(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_stdin m;
    if (fb_msg_decode_stdin(f, &m, &err) < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, err.msg);
    bool eof = m.eof;
    fb_exec *e = find_exec(a, f->id);
    if (!e)
        return 0; /* the command already ended; late stdin is dropped */
    if (f->payload_len > 0 && e->in_fd >= 0) {
        if (e->in_len + f->payload_len > 2 * FB_STDIN_WINDOW)
            return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST,
                                        "stdin sent beyond the flow-control window");
        uint8_t *nb = realloc(e->in_buf, e->in_len + f->payload_len);
        if (!nb)
            return fb_agent_reply_error(a, f->id, FB_E_RESOURCE, "out of memory buffering stdin");
        memcpy(nb + e->in_len, f->payload, f->payload_len);
        e->in_buf = nb;
        e->in_len += f->payload_len;
    }
    if (eof)
        e->in_eof = true;
    write_stdin(a, e);
    return 0;
}

int fb_exec_signal(fb_agent *a, const fb_frame *f)
{
    fb_err err = {{0}};
    fb_msg_signal m;
    if (fb_msg_decode_signal(f, &m, &err) < 0)
        return fb_agent_reply_error(a, f->id, FB_E_BAD_REQUEST, err.msg);
    fb_exec *e = find_exec(a, f->id);
    /* The command's group exists once its child has called setsid(); a
     * signal that arrives before (a cancel right after the start) goes to
     * the child itself, which has started nothing else yet.  Without this
     * an early cancel was lost (ESRCH). */
    if (e && !e->exited && kill(-e->pid, m.signal) < 0 && errno == ESRCH)
        kill(e->pid, m.signal);
    return 0;
}

int fb_exec_pollfds(fb_agent *a, struct pollfd *fds, int max, fb_exec **owner, int *which)
{
    int n = 0;
    bool backpressure = fb_chan_queued(&a->chan) > FB_BACKPRESSURE;
    for (int i = 0; i < FB_MAX_EXECS; i++) {
        fb_exec *e = a->execs[i];
        if (!e)
            continue;
        int fdv[3] = {e->out_fd, e->err_fd, e->in_len ? e->in_fd : -1};
        for (int k = 0; k < 3; k++) {
            if (fdv[k] < 0 || n >= max)
                continue;
            if (k < 2 && backpressure)
                continue;
            fds[n].fd = fdv[k];
            fds[n].events = k == 2 ? POLLOUT : POLLIN;
            fds[n].revents = 0;
            owner[n] = e;
            which[n] = k;
            n++;
        }
    }
    return n;
}

void fb_exec_handle_io(fb_agent *a, fb_exec *e, int which, short revents)
{
    if (which == 0 && (revents & (POLLIN | POLLHUP | POLLERR)))
        read_output(a, e, &e->out_fd, FB_MSG_STDOUT);
    else if (which == 1 && (revents & (POLLIN | POLLHUP | POLLERR)))
        read_output(a, e, &e->err_fd, FB_MSG_STDERR);
    else if (which == 2) {
        if (revents & (POLLERR | POLLHUP)) {
            e->in_len = 0;
            close_fd(&e->in_fd);
        } else if (revents & POLLOUT)
            write_stdin(a, e);
    }
}

static void send_exit(fb_agent *a, fb_exec *e)
{
    if (e->start_failed && !e->timed_out) {
        if (e->fail.stage == 1)
            reply_not_started(a, e->id, e->fail.err_no == ENOENT ? 127 : 126,
                              e->fail.err_no == ENOENT ? FB_E_NOT_FOUND : FB_E_NOT_EXECUTABLE,
                              e->fail.msg);
        else
            reply_not_started(a, e->id, 125, FB_E_SETUP_FAILED, e->fail.msg);
        return;
    }
    if (e->held_at_start && !e->timed_out && WIFSIGNALED(e->wstatus) && WTERMSIG(e->wstatus) == SIGKILL) {
        char msg[160];
        snprintf(msg, sizeof msg, "the command was stopped before it started (killed after %llu ms)",
                 (unsigned long long)e->watchdog_ms);
        reply_not_started(a, e->id, 125, FB_E_SETUP_FAILED, msg);
        return;
    }
    fb_msg_exit m = {.started = true, .timed_out = e->timed_out, .truncated = e->truncated,
                     .duration_ms = (e->exit_ns - e->start_ns) / 1000000ull};
    if (WIFEXITED(e->wstatus)) {
        m.code = WEXITSTATUS(e->wstatus);
    } else {
        m.signal = WTERMSIG(e->wstatus);
        m.oom = m.signal == SIGKILL && !e->timed_out && read_oom_kills() > e->oom_before;
    }
    oom_stale = true; /* the next command's baseline: read after this answer went out */
    send_exit_msg(a, e->id, &m);
}

/* Called when a command may be complete. */
static void maybe_finish(fb_agent *a, int slot)
{
    fb_exec *e = a->execs[slot];
    if (!e->exited)
        return;
    if (e->out_fd >= 0 || e->err_fd >= 0) {
        if (fb_now_ns() < e->exit_ns + EXIT_GRACE_NS)
            return;
        /* An escaped process holds the pipes; stop waiting for it. */
        close_fd(&e->out_fd);
        close_fd(&e->err_fd);
    }
    send_exit(a, e);
    exec_free(e);
    a->execs[slot] = NULL;
}

void fb_exec_reap(fb_agent *a)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            break;
        for (int i = 0; i < FB_MAX_EXECS; i++) {
            fb_exec *e = a->execs[i];
            if (e && e->pid == pid && !e->exited) {
                e->exited = true;
                e->wstatus = status;
                e->exit_ns = fb_now_ns();
                /* Whatever the command left behind in its group goes too. */
                kill(-e->pid, SIGKILL);
                close_fd(&e->in_fd);
            }
        }
        /* Anything else is an orphan reparented to us: just reaped. */
    }
    for (int i = 0; i < FB_MAX_EXECS; i++)
        if (a->execs[i])
            maybe_finish(a, i);
}

int fb_exec_tick(fb_agent *a)
{
    uint64_t now = fb_now_ns();
    uint64_t next = UINT64_MAX;
    for (int i = 0; i < FB_MAX_EXECS; i++) {
        fb_exec *e = a->execs[i];
        if (!e)
            continue;
        if (!e->exited && now >= e->deadline_ns && !e->timed_out) {
            e->timed_out = true;
            kill(-e->pid, SIGKILL);
            kill(e->pid, SIGKILL);
        }
        if (!e->exited && !e->timed_out && e->deadline_ns < next)
            next = e->deadline_ns;
        if (e->exited) {
            uint64_t g = e->exit_ns + EXIT_GRACE_NS;
            if (g < next)
                next = g;
            maybe_finish(a, i);
        }
    }
    if (next == UINT64_MAX)
        return -1;
    now = fb_now_ns();
    return next <= now ? 0 : (int)((next - now) / 1000000ull) + 1;
}

void fb_exec_kill_all(fb_agent *a)
{
    for (int i = 0; i < FB_MAX_EXECS; i++) {
        fb_exec *e = a->execs[i];
        if (e && !e->exited) {
            kill(-e->pid, SIGKILL);
            kill(e->pid, SIGKILL);
        }
    }
}

/*
 * harden.h - layer 2: what every tool process gives up before it runs.
 *
 * Called in the forked child, after its fds are in place and right before
 * execve.  The order matters and follows bubblewrap's: rlimits and the OOM
 * score while still privileged, then supplementary groups, gid, uid (which
 * empties the permitted and effective capability sets), then the ambient
 * and inheritable sets (the bounding set was emptied once in the agent,
 * fb_harden_agent, and is checked), no_new_privs, and last the seccomp filter,
 * so that nothing after it needs a syscall the filter refuses.  Between
 * no_new_privs and seccomp the process enters a Landlock domain of its own,
 * which isolates each exec's processes from every other exec's (harden.c).
 * Each step is checked; a step that did not take effect aborts the exec.
 */
#ifndef FB_AGENT_HARDEN_H
#define FB_AGENT_HARDEN_H

#include <stdbool.h>
#include <linux/filter.h>
#include <stdint.h>

#include "common/util.h"

#define FB_TOOL_UID 1000
#define FB_TOOL_GID 1000
/* Queued signals and POSIX message queue bytes per tool process. */
#define FB_TOOL_SIGPENDING 1024
#define FB_TOOL_MSGQUEUE (256u * 1024u)

/* The tool-process seccomp program, compiled at build time
 * (seccomp_rules.h): each exec only hands it to the kernel. */
typedef struct fb_seccomp_progs {
    const struct sock_filter *prog; /* static: build/gen/seccomp_bpf.h */
    unsigned short len;
} fb_seccomp_progs;

typedef struct fb_tool_limits {
    uint64_t nproc;     /* RLIMIT_NPROC */
    uint64_t nofile;    /* RLIMIT_NOFILE */
    uint64_t fsize;     /* RLIMIT_FSIZE, bytes */
    bool allow_inet;    /* only with a network grant: TCP sockets to the egress bridge */
    uint64_t core_max;  /* the agent's hard RLIMIT_CORE (fb_harden_agent) */
    int landlock_ruleset; /* each exec's domain is made from it (fb_harden_agent) */
    char prep_error[512]; /* fb_harden_agent failed: every exec fails with this */
} fb_tool_limits;

/* Chooses the program for this sandbox (in the agent, once). */
int fb_seccomp_prepare(bool allow_inet, fb_seccomp_progs *out, fb_err *err);

/* What is the same for every exec, done once in the agent before the first
 * (at hello): empties the agent's capability bounding set, which every
 * tool process inherits (the agent itself never execs), reads the hard
 * core limit into lim->core_max and builds the Landlock ruleset each exec
 * makes its own domain from (lim->landlock_ruleset).  On failure (-1) the
 * reason goes into lim->prep_error and every exec fails with it, as when
 * each exec did these steps itself. */
int fb_harden_agent(fb_tool_limits *lim);

/* Drops everything; on failure writes a reason into err and returns -1.
 * The caller (a child about to exec) must then _exit without exec'ing.
 * oom_inherited: the process already has the tool processes' OOM score
 * (its spawner has it: exec.c, oom_given), so it is not
 * written again. */
int fb_harden_tool_process(const fb_tool_limits *lim, const fb_seccomp_progs *progs, bool oom_inherited,
                           fb_err *err);

#endif

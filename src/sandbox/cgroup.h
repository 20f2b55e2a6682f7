/*
 * cgroup.h - per-sandbox resource limits, on cgroup v2 or v1.
 *
 * Production hosts mostly run the unified v2 hierarchy; some still mount
 * v1 controllers (memory, pids, cpu) separately.  This module hides the
 * difference: one call creates forgebox/<id> with memory (no swap), pids
 * and CPU limits, one attaches a process, one reads the OOM-kill count, one
 * kills whatever is left and removes the group.  It never needs systemd.
 */
#ifndef FB_CGROUP_H
#define FB_CGROUP_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/util.h"

typedef enum { FB_CGROUP_NONE = 0, FB_CGROUP_V1 = 1, FB_CGROUP_V2 = 2 } fb_cgroup_version;

typedef struct fb_cgroup_limits {
    uint64_t memory_bytes;
    uint64_t pids;
    uint64_t cpu_millis; /* 1000 = one CPU */
} fb_cgroup_limits;

typedef struct fb_cgroup {
    fb_cgroup_version version;
    char name[96];
    char path[3][256]; /* v2: [0]; v1: memory, pids, cpu */
    bool created;
    int oom_fd; /* the file fb_cgroup_oom_kills reads, kept open; -1 if none */
} fb_cgroup;

/* Which hierarchy this host offers, with a one-line description. */
fb_cgroup_version fb_cgroup_detect(char *desc, size_t cap);

int fb_cgroup_create(fb_cgroup *cg, const char *name, const fb_cgroup_limits *lim, fb_err *err);
/* Moves process pid (all its threads) into the group.  The kernel takes
 * its cgroup threadgroup lock for writing, which waits for an RCU grace
 * period (5-15 ms) unless the host favours dynamic cgroup changes: spawns
 * avoid it with the two calls below. */
int fb_cgroup_attach(const fb_cgroup *cg, pid_t pid, fb_err *err);
/* v2: an O_PATH fd of the group's directory, for clone3's
 * CLONE_INTO_CGROUP (the child is born in the group; no migration at
 * all).  -1 with err set on v1 or failure. */
int fb_cgroup_open_dir(const fb_cgroup *cg, fb_err *err);
/* v1: moves the calling thread into the group by writing "0" to each
 * hierarchy's tasks file, which the kernel does without the threadgroup
 * lock (a thread that moves itself cannot exit or exec meanwhile).  For a
 * single-threaded process - a raw clone just made, before it starts
 * anything - that moves the whole process.  Only open/write/close: safe
 * in a raw clone of a threaded parent. */
int fb_cgroup_enter_self(const fb_cgroup *cg, fb_err *err);
/* How many processes the kernel OOM-killed in this group so far (read at
 * every exec's start and end: from a file kept open since creation). */
uint64_t fb_cgroup_oom_kills(const fb_cgroup *cg);
/* Peak/current memory use in bytes (0 if unknown). */
uint64_t fb_cgroup_memory_current(const fb_cgroup *cg);
/* Kills every process left in the group and removes it.  Returns -1 if
 * the group could not be removed (processes that would not die). */
int fb_cgroup_destroy(fb_cgroup *cg);
/* Fills cg for an existing group of that name (for orphan clean-up). */
void fb_cgroup_open_existing(fb_cgroup *cg, const char *name);

#endif

/*
 * cgroup.c - see cgroup.h.
 *
 * v2: /sys/fs/cgroup/forgebox/<id> with memory.max, memory.swap.max = 0,
 * pids.max and cpu.max; the controllers are enabled in the parents'
 * subtree_control on first use.  v1: the same name under each of the
 * memory, pids and cpu hierarchies, with memory.limit_in_bytes (and
 * memsw when swap accounting exists), pids.max and cfs quota.
 *
 * Destroying kills with cgroup.kill where the kernel has it and otherwise
 * walks cgroup.procs until the group is empty, then rmdirs; a group whose
 * processes will not die is reported, never silently leaked.
 */
#define _GNU_SOURCE
#include "sandbox/cgroup.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static const char *const v1_controllers[3] = {"memory", "pids", "cpu"};

fb_cgroup_version fb_cgroup_detect(char *desc, size_t cap)
{
    struct statfs sf;
    if (statfs("/sys/fs/cgroup", &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
        if (desc)
            snprintf(desc, cap, "v2 (unified hierarchy at /sys/fs/cgroup)");
        return FB_CGROUP_V2;
    }
    bool all = true;
    for (int i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "/sys/fs/cgroup/%s/cgroup.procs", v1_controllers[i]);
        if (access(p, F_OK) != 0)
            all = false;
    }
    if (all) {
        if (desc)
            snprintf(desc, cap, "v1 (memory, pids and cpu controllers)");
        return FB_CGROUP_V1;
    }
    if (desc)
        snprintf(desc, cap, "none usable (need v2, or v1 memory+pids+cpu)");
    return FB_CGROUP_NONE;
}

static int knob(const char *dir, const char *file, const char *value, fb_err *err)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    return fb_write_file(p, value, err);
}

static int enable_v2_controllers(fb_err *err)
{
    /* Parents must delegate memory, pids and cpu to their children. */
    const char *const dirs[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/forgebox"};
    for (int i = 0; i < 2; i++) {
        if (i == 1 && mkdir(dirs[1], 0755) < 0 && errno != EEXIST)
            return fb_fail_errno(err, "cannot create %s", dirs[1]);
        if (knob(dirs[i], "cgroup.subtree_control", "+memory +pids +cpu", err) < 0)
            return -1;
    }
    return 0;
}

/* The file that counts the group's OOM kills, opened once: an exec reads
 * it at its start and end, and opening a cgroup file by path each time was
 * ~7% of an audited API exec's CPU (bench/README.md, session 6). */
static const char *oom_file(const fb_cgroup *cg)
{
    return cg->version == FB_CGROUP_V2 ? "memory.events" : "memory.oom_control";
}

static void open_oom_file(fb_cgroup *cg)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", cg->path[0], oom_file(cg));
    cg->oom_fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
}

int fb_cgroup_create(fb_cgroup *cg, const char *name, const fb_cgroup_limits *lim, fb_err *err)
{
    memset(cg, 0, sizeof *cg);
    cg->oom_fd = -1;
    cg->version = fb_cgroup_detect(NULL, 0);
    snprintf(cg->name, sizeof cg->name, "%s", name);
    char v[64];
    if (cg->version == FB_CGROUP_V2) {
        if (enable_v2_controllers(err) < 0)
            return -1;
        snprintf(cg->path[0], sizeof cg->path[0], "/sys/fs/cgroup/forgebox/%s", name);
        if (mkdir(cg->path[0], 0755) < 0)
            return fb_fail_errno(err, "cannot create cgroup %s", cg->path[0]);
        cg->created = true;
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->memory_bytes);
        if (knob(cg->path[0], "memory.max", v, err) < 0)
            goto fail;
        /* Not every kernel has swap accounting; absence means no swap use. */
        (void)knob(cg->path[0], "memory.swap.max", "0", NULL);
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->pids);
        if (knob(cg->path[0], "pids.max", v, err) < 0)
            goto fail;
        snprintf(v, sizeof v, "%llu 100000", (unsigned long long)lim->cpu_millis * 100);
        if (knob(cg->path[0], "cpu.max", v, err) < 0)
            goto fail;
        open_oom_file(cg);
        return 0;
    }
    if (cg->version == FB_CGROUP_V1) {
        for (int i = 0; i < 3; i++) {
            char parent[128];
            snprintf(parent, sizeof parent, "/sys/fs/cgroup/%s/forgebox", v1_controllers[i]);
            if (mkdir(parent, 0755) < 0 && errno != EEXIST) {
                fb_fail_errno(err, "cannot create %s", parent);
                goto fail;
            }
            snprintf(cg->path[i], sizeof cg->path[i], "%s/%s", parent, name);
            if (mkdir(cg->path[i], 0755) < 0) {
                fb_fail_errno(err, "cannot create cgroup %s", cg->path[i]);
                cg->path[i][0] = '\0';
                goto fail;
            }
            cg->created = true;
        }
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->memory_bytes);
        if (knob(cg->path[0], "memory.limit_in_bytes", v, err) < 0)
            goto fail;
        char memsw[300];
        snprintf(memsw, sizeof memsw, "%s/memory.memsw.limit_in_bytes", cg->path[0]);
        if (access(memsw, F_OK) == 0 && fb_write_file(memsw, v, err) < 0)
            goto fail;
        (void)knob(cg->path[0], "memory.swappiness", "0", NULL);
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->pids);
        if (knob(cg->path[1], "pids.max", v, err) < 0)
            goto fail;
        if (knob(cg->path[2], "cpu.cfs_period_us", "100000", err) < 0)
            goto fail;
        snprintf(v, sizeof v, "%llu", (unsigned long long)lim->cpu_millis * 100);
        if (knob(cg->path[2], "cpu.cfs_quota_us", v, err) < 0)
            goto fail;
        open_oom_file(cg);
        return 0;
    }
    return fb_fail(err, "no usable cgroup hierarchy: need cgroup v2, or v1 with the memory, pids "
                        "and cpu controllers mounted under /sys/fs/cgroup");
fail:
    fb_cgroup_destroy(cg);
    return -1;
}

int fb_cgroup_attach(const fb_cgroup *cg, pid_t pid, fb_err *err)
{
    char v[32];
    snprintf(v, sizeof v, "%d", (int)pid);
    int n = cg->version == FB_CGROUP_V2 ? 1 : 3;
    for (int i = 0; i < n; i++)
        if (knob(cg->path[i], "cgroup.procs", v, err) < 0)
            return -1;
    return 0;
}

int fb_cgroup_open_dir(const fb_cgroup *cg, fb_err *err)
{
    if (cg->version != FB_CGROUP_V2)
        return fb_fail(err, "internal: CLONE_INTO_CGROUP needs cgroup v2");
    int fd = open(cg->path[0], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return fb_fail_errno(err, "cannot open cgroup %s", cg->path[0]);
    return fd;
}

int fb_cgroup_enter_self(const fb_cgroup *cg, fb_err *err)
{
    if (cg->version != FB_CGROUP_V1)
        return fb_fail(err, "internal: a v1 self-move on a %s host",
                       cg->version == FB_CGROUP_V2 ? "v2" : "cgroup-less");
    for (int i = 0; i < 3; i++)
        if (knob(cg->path[i], "tasks", "0", err) < 0)
            return -1;
    return 0;
}

/* The value of `key` in a cgroup file of "key value" lines: through fd
 * (pread from 0: the kernel makes the text anew) when there is one, else
 * by path. */
static uint64_t read_key(int fd, const char *dir, const char *file, const char *key)
{
    char p[512], buf[4096];
    if (fd >= 0) {
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n < 0)
            return 0;
        buf[n] = '\0';
    } else {
        snprintf(p, sizeof p, "%s/%s", dir, file);
        if (fb_read_file(p, buf, sizeof buf, NULL) < 0)
            return 0;
    }
    size_t klen = strlen(key);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ')
            return strtoull(line + klen + 1, NULL, 10);
    }
    return 0;
}

uint64_t fb_cgroup_oom_kills(const fb_cgroup *cg)
{
    if (cg->version == FB_CGROUP_NONE || !cg->created)
        return 0;
    return read_key(cg->oom_fd, cg->path[0], oom_file(cg), "oom_kill");
}

uint64_t fb_cgroup_memory_current(const fb_cgroup *cg)
{
    char p[512], buf[64];
    if (cg->version == FB_CGROUP_V2)
        snprintf(p, sizeof p, "%s/memory.current", cg->path[0]);
    else
        snprintf(p, sizeof p, "%s/memory.usage_in_bytes", cg->path[0]);
    if (fb_read_file(p, buf, sizeof buf, NULL) < 0)
        return 0;
    return strtoull(buf, NULL, 10);
}

/* Kills one process listed in our group.  The pid is pinned with a pidfd
 * first and its membership checked afterwards, so a pid that was reused by
 * an unrelated host process between the listing and the kill is left
 * alone. */
static void kill_member(pid_t pid, const char *name)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return;
    char path[64], buf[2048], want[128];
    snprintf(path, sizeof path, "/proc/%d/cgroup", (int)pid);
    snprintf(want, sizeof want, "/forgebox/%s", name);
    if (fb_read_file(path, buf, sizeof buf, NULL) == 0 && strstr(buf, want))
        (void)syscall(SYS_pidfd_send_signal, pfd, SIGKILL, NULL, 0);
    close(pfd);
}

/* Kills what is listed in dir/cgroup.procs; returns how many were seen. */
static int kill_procs(const char *dir, const char *name)
{
    char p[512], buf[8192];
    snprintf(p, sizeof p, "%s/cgroup.procs", dir);
    if (fb_read_file(p, buf, sizeof buf, NULL) < 0)
        return 0;
    int n = 0;
    for (char *s = buf; *s;) {
        char *end;
        long pid = strtol(s, &end, 10);
        if (end == s)
            break;
        if (pid > 0) {
            kill_member((pid_t)pid, name);
            n++;
        }
        s = end;
        while (*s == '\n')
            s++;
    }
    return n;
}

int fb_cgroup_destroy(fb_cgroup *cg)
{
    if (!cg->created)
        return 0;
    if (cg->oom_fd >= 0)
        close(cg->oom_fd);
    cg->oom_fd = -1;
    int n = cg->version == FB_CGROUP_V2 ? 1 : 3;
    int rc = 0;
    if (cg->version == FB_CGROUP_V2)
        (void)knob(cg->path[0], "cgroup.kill", "1", NULL);
    for (int i = 0; i < n; i++) {
        if (!cg->path[i][0])
            continue;
        /* rmdir fails with EBUSY until the last process is gone. */
        for (int tries = 0; tries < 500; tries++) {
            if (rmdir(cg->path[i]) == 0 || errno == ENOENT)
                break;
            kill_procs(cg->path[i], cg->name);
            usleep(2000);
        }
        if (access(cg->path[i], F_OK) == 0) {
            fprintf(stderr, "forgebox: warning: cgroup %s could not be removed\n", cg->path[i]);
            rc = -1;
        }
    }
    cg->created = false;
    return rc;
}

void fb_cgroup_open_existing(fb_cgroup *cg, const char *name)
{
    memset(cg, 0, sizeof *cg);
    cg->oom_fd = -1;
    cg->version = fb_cgroup_detect(NULL, 0);
    snprintf(cg->name, sizeof cg->name, "%s", name);
    if (cg->version == FB_CGROUP_V2)
        snprintf(cg->path[0], sizeof cg->path[0], "/sys/fs/cgroup/forgebox/%s", name);
    else if (cg->version == FB_CGROUP_V1)
        for (int i = 0; i < 3; i++)
            snprintf(cg->path[i], sizeof cg->path[i], "/sys/fs/cgroup/%s/forgebox/%s",
                     v1_controllers[i], name);
    for (int i = 0; i < 3; i++)
        if (cg->path[i][0] && access(cg->path[i], F_OK) == 0)
            cg->created = true;
}

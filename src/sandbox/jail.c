/*
 * jail.c - the `jail` backend: fb-agent under Linux namespaces.
 *
 * Container-grade isolation that starts in milliseconds, for hosts or
 * workloads where a VM is too heavy; an explicit choice, never a silent
 * fallback.  The agent runs as PID 1 of new user, pid, mount, ipc, uts,
 * net (no interfaces at all, not even lo up), cgroup and time namespaces.
 * The user namespace belongs to this sandbox's slot uid (confine.h says
 * why and how) and maps sandbox uids 0..65535 onto the slot's host range,
 * so "root" in the jail is an unprivileged host uid, no two sandboxes share
 * a uid, and the kernel's per-user counters of a jail are the slot's.
 *
 * Nothing the jail can see (and so inotify-watch, or time) is an inode the
 * host or another sandbox uses:
 *   - the root is an overlay of this sandbox's own over the one shared,
 *     read-only mount of the sealed rootfs.erofs (jailroot.c: its
 *     superblock and inodes are this sandbox's, only the page cache below
 *     is shared), or where the kernel cannot, rootfs.erofs mounted from
 *     its file (kernel 6.12+) or rootfs.ext4 through a loop device, a
 *     superblock of its own (the image check covers one file instead of a
 *     tree, and no superblock is ever written to);
 *   - /dev is a tmpfs of this sandbox with device nodes host root made on
 *     it (null, zero, full, random, urandom, tty), never bind mounts of the
 *     host's devtmpfs;
 *   - /dev/shm, /workspace and /tmp are tmpfs mounted here by host root,
 *     so mountinfo shows no host uid (a tmpfs mounted inside the user
 *     namespace prints its owner as the host uid);
 *   - /proc is the sandbox's own; files that would show host-wide facts
 *     are covered by files from a small read-only tmpfs staged here: empty
 *     ones (the kernel command line, disk, interrupt, vm and lock
 *     statistics, ...) and synthetic ones (meminfo from the memory limit,
 *     stat and cpuinfo with one entry per vCPU, a quiet loadavg, a random
 *     boot_id) and fixed values for host-wide counters under /proc/sys
 *     (open files, inodes, dentries, entropy); uptime and process start
 *     times come from the time namespace.  Still the host's: the idle
 *     field of /proc/uptime (summed over the host's CPUs; covering it
 *     needs a FUSE view such as lxcfs, which would freeze uptime if done
 *     with a static file);
 *   - the jail runs on as many CPUs as it has vCPUs (sched_getaffinity,
 *     nproc), spread over the manager's CPUs by slot;
 *
 * The steps that need host root (loop mount, mknod, the tmpfs mounts) run
 * in the spawn's intermediate before it gives root up; the rest (proc,
 * covering /proc, pivot_root) in the child, as root of its namespaces.
 * fb-agent then adds the tool-process hardening exactly as in a VM.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"
#include "sandbox/backend.h"
#include "sandbox/confine.h"
#include "sandbox/jailroot.h"

/* The agent's tool user (agent/harden.h FB_TOOL_UID) inside the jail. */
#define JAIL_TOOL_UID 1000u
#define LOOP_ATTEMPTS 16

typedef struct jail_args {
    const fb_sandbox *sb;
    int chan;
    int net;           /* the egress bridge's channel, or -1 */
    int rootfs_tree;   /* a detached, read-only mount of rootfs.ext4 */
    char root[4200];   /* run_dir/root, in the setup tmpfs: the new root */
    char stage[4200];  /* run_dir/stage, in the setup tmpfs: the /proc cover files */
    char meminfo[512];
    char stat[64 * 48 + 256];
    char boot_id[40];
    char *cpuinfo;     /* malloc'd: one block per vCPU */
    cpu_set_t cpus;    /* the CPUs the jail may run on: as many as its vCPUs */
} jail_args;

/* ---- the rootfs: a loop device of our own --------------------------------- */

/* Binds a free loop device to the image, read-only and auto-clearing (it
 * goes away with the last mount of it).  Returns its fd. */
static int attach_loop(int image_fd, fb_err *err)
{
    cleanup_fd int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return fb_fail_errno(err, "cannot open /dev/loop-control (the jail mounts its rootfs "
                                  "through a loop device)");
    struct loop_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.fd = (unsigned)image_fd;
    cfg.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
    snprintf((char *)cfg.info.lo_file_name, sizeof cfg.info.lo_file_name, "forgebox-rootfs");
    for (int i = 0; i < LOOP_ATTEMPTS; i++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return fb_fail_errno(err, "no free loop device");
        char dev[32];
        snprintf(dev, sizeof dev, "/dev/loop%d", n);
        int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return fb_fail_errno(err, "cannot open %s", dev);
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0)
            return fd;
        int e = errno;
        close(fd);
        if (e != EBUSY) /* EBUSY: another process took it first */
            return fb_fail(err, "cannot attach the rootfs image to %s: %s", dev, strerror(e));
    }
    return fb_fail(err, "cannot get a loop device (%d attempts lost a race)", LOOP_ATTEMPTS);
}

/* Mounts the image's root as a detached tree, read-only (the superblock,
 * not just the mount), nosuid, nodev: where the image has rootfs.erofs,
 * this jail's overlay of the image's shared EROFS mount (jailroot.c), or
 * where the kernel has no overlayfs with file-descriptor layers, an EROFS
 * superblock of the jail's own mounted from the file (kernel 6.12+: no
 * loop device; reads copy from the image file's page cache in the reading
 * task instead of waiting for a loop worker); else rootfs.ext4 through a
 * loop device of our own.  Both were verified (FB_IMAGE_NEEDS_EROFS: a rootfs.erofs
 * present is one the manifest lists).  The jail attaches the tree with
 * move_mount, so it never needs to look the image path up. */
static int open_rootfs_tree(const fb_sandbox *sb, fb_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", sb->image_dir, FB_IMAGE_EROFS);
    cleanup_fd int eimg = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (eimg < 0 && errno != ENOENT)
        return fb_fail_errno(err, "cannot open the rootfs image %s", path);
    if (eimg >= 0) {
        /* The shared root is only faster: whatever keeps this host from it
         * (no overlayfs with layers as file descriptors, a run dir that
         * cannot hold it), the jail's own superblock of the same verified
         * file is what a jail had before it. */
        int mnt = fb_jailroot_open(sb->cfg.run_dir, sb->image_dir, eimg, path, err);
        if (mnt < 0) {
            char why[sizeof err->msg + 64];
            snprintf(why, sizeof why, "jail: no shared root (%s), an EROFS superblock of its own",
                     mnt == -2 ? "not on this kernel" : err->msg);
            fb_trace(why);
            mnt = fb_jailroot_erofs_tree(eimg, path, err);
        }
        if (mnt != -2)
            return mnt;
    }
    snprintf(path, sizeof path, "%s/rootfs.ext4", sb->image_dir);
    cleanup_fd int img = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (img < 0)
        return fb_fail_errno(err, "cannot open the rootfs image %s", path);
    cleanup_fd int loop = attach_loop(img, err);
    if (loop < 0)
        return -1;
    cleanup_fd int fs = fsopen("ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        return fb_fail_errno(err, "fsopen(ext4)");
    /* The source is shown in the jail's mountinfo: a path through our own
     * fd says nothing about the host (which loop device, how many). */
    char src[64];
    snprintf(src, sizeof src, "/proc/self/fd/%d", loop);
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", src, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_SET_FLAG, "noload", NULL, 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return fb_fail_errno(err, "cannot mount the rootfs image %s (ext4, read-only)", path);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC,
                      MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        return fb_fail_errno(err, "fsmount of the rootfs image");
    return mnt;
}

/* ---- the /proc cover files --------------------------------------------------- */

static void format_meminfo(jail_args *ja, uint64_t bytes)
{
    unsigned long long kb = (unsigned long long)(bytes / 1024);
    /* A static view: the sandbox's memory limit is all there is. */
    snprintf(ja->meminfo, sizeof ja->meminfo,
             "MemTotal:       %llu kB\nMemFree:        %llu kB\nMemAvailable:   %llu kB\n"
             "Buffers:               0 kB\nCached:                0 kB\n"
             "SwapCached:            0 kB\nActive:                0 kB\n"
             "Inactive:              0 kB\nSwapTotal:             0 kB\n"
             "SwapFree:              0 kB\nDirty:                 0 kB\n"
             "Shmem:                 0 kB\nSlab:                  0 kB\n"
             "SReclaimable:          0 kB\nSUnreclaim:            0 kB\n",
             kb, kb, kb);
}

static void format_stat(jail_args *ja, unsigned vcpus)
{
    static const char zeros[] = " 0 0 0 0 0 0 0 0 0 0\n";
    size_t n = (size_t)snprintf(ja->stat, sizeof ja->stat, "cpu %s", zeros);
    /* glibc counts these lines for sysconf(_SC_NPROCESSORS_ONLN) (there is
     * no /sys): os.cpu_count() is the sandbox's vCPUs. */
    for (unsigned i = 0; i < vcpus && n < sizeof ja->stat; i++)
        n += (size_t)snprintf(ja->stat + n, sizeof ja->stat - n, "cpu%u%s", i, zeros);
    /* btime: the time namespace starts the boot clock at this moment. */
    if (n < sizeof ja->stat)
        snprintf(ja->stat + n, sizeof ja->stat - n,
                 "intr 0\nctxt 0\nbtime %lld\nprocesses 0\nprocs_running 1\nprocs_blocked 0\n"
                 "softirq 0 0 0 0 0 0 0 0 0 0 0\n",
                 (long long)time(NULL));
}

/* The host's first processor block, reduced to what describes the CPU
 * model and its features (what CPUID tells any process anyway), read
 * once: not its number, siblings, cores, APIC ids or clock. */
static char cpu_template[8192];
static pthread_once_t cpu_template_once = PTHREAD_ONCE_INIT;

static void read_cpu_template(void)
{
    static const char *const keep[] = {"vendor_id", "cpu family", "model", "model name", "stepping",
                                       "fpu", "fpu_exception", "cpuid level", "wp", "flags", "bugs",
                                       "bogomips", "clflush size", "cache_alignment", "address sizes",
                                       NULL};
    char buf[16384];
    if (fb_read_file("/proc/cpuinfo", buf, sizeof buf, NULL) < 0)
        buf[0] = '\0';
    size_t n = 0;
    for (char *line = buf, *next; line && *line && *line != '\n'; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        size_t klen = (size_t)(colon - line);
        while (klen > 0 && (line[klen - 1] == '\t' || line[klen - 1] == ' '))
            klen--;
        for (const char *const *k = keep; *k; k++)
            if (strlen(*k) == klen && strncmp(line, *k, klen) == 0 && n + strlen(line) + 2 < sizeof cpu_template) {
                n += (size_t)snprintf(cpu_template + n, sizeof cpu_template - n, "%s\n", line);
                break;
            }
    }
}

/* /proc/cpuinfo: one block per vCPU, so that tools counting processors
 * there see the sandbox's share, not the host's. */
static int format_cpuinfo(jail_args *ja, unsigned vcpus, fb_err *err)
{
    pthread_once(&cpu_template_once, read_cpu_template);
    size_t block = strlen(cpu_template) + 64, cap = block * vcpus + 1;
    ja->cpuinfo = malloc(cap);
    if (!ja->cpuinfo)
        return fb_fail(err, "out of memory");
    size_t n = 0;
    for (unsigned i = 0; i < vcpus; i++)
        n += (size_t)snprintf(ja->cpuinfo + n, cap - n, "processor\t: %u\n%s\n", i, cpu_template);
    ja->cpuinfo[n] = '\0';
    return 0;
}

/* The jail runs on as many CPUs as it has vCPUs (what nproc(1) and
 * sched_getaffinity(2) show), picked from the manager's own set and spread
 * over it by slot so that neighbouring sandboxes start on different CPUs.
 * The cgroup's CPU quota still bounds what it uses. */
static void pick_cpus(jail_args *ja, const fb_sandbox *sb)
{
    cpu_set_t mine;
    CPU_ZERO(&ja->cpus);
    if (sched_getaffinity(0, sizeof mine, &mine) < 0)
        return;
    int have[CPU_SETSIZE], n = 0;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &mine))
            have[n++] = c;
    if (n == 0)
        return;
    unsigned want = sb->cfg.vcpus < (unsigned)n ? (unsigned)sb->cfg.vcpus : (unsigned)n;
    unsigned start = (unsigned)(sb->slot > 0 ? sb->slot : 0) * want;
    for (unsigned i = 0; i < want; i++)
        CPU_SET(have[(start + i) % (unsigned)n], &ja->cpus);
}

static void format_boot_id(jail_args *ja)
{
    uint8_t r[16];
    fb_random_bytes(r, sizeof r);
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40); /* a version 4 UUID */
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80);
    char h[33];
    fb_hex(r, sizeof r, h);
    snprintf(ja->boot_id, sizeof ja->boot_id, "%.8s-%.4s-%.4s-%.4s-%.12s\n", h, h + 8, h + 12,
             h + 16, h + 20);
}

/* Host-wide counters under /proc/sys a tool process has no use for: they
 * are covered by a fixed value (the file must still parse). */
static const char *const proc_fixed[][2] = {
    {"sys/fs/file-nr", "1024\t0\t1048576\n"},
    {"sys/fs/inode-nr", "1024\t0\n"},
    {"sys/fs/inode-state", "1024\t0\t0\t0\t0\t0\t0\n"},
    {"sys/fs/dentry-state", "1024\t0\t45\t0\t0\t0\n"},
    {"sys/kernel/random/entropy_avail", "256\n"},
};
#define N_PROC_FIXED (sizeof proc_fixed / sizeof proc_fixed[0])

/* /proc files showing host-wide facts a tool process has no use for: they
 * are covered by an empty file. */
static const char *const proc_empty[] = {
    "cmdline", "config.gz", "consoles", "devices", "diskstats", "dma", "interrupts", "iomem",
    "ioports", "key-users", "locks", "misc", "mtrr", "partitions", "softirqs", "swaps",
    "vmstat", "zoneinfo", "buddyinfo", "pagetypeinfo", "schedstat", "cgroups", "slabinfo",
    "vmallocinfo", "latency_stats", NULL,
};

/* ---- host-root steps (in the spawn's intermediate) -------------------------- */

static void mount_tmpfs(int report, const char *dst, unsigned long flags, const char *opts)
{
    if (mount("tmpfs", dst, "tmpfs", flags, opts) < 0)
        fb_die_with_error(report, "cannot mount a tmpfs on %s", dst);
}

static void own(int report, const char *path, uid_t uid, mode_t mode)
{
    if (lchown(path, uid, uid) < 0 || (mode && chmod(path, mode) < 0))
        fb_die_with_error(report, "cannot set the owner of %s", path);
}

static void stage_file(int report, const char *dir, const char *name, const char *text)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
    if (fd < 0 || fb_write_all(fd, text, strlen(text)) < 0)
        fb_die_with_error(report, "cannot write %s", p);
    close(fd);
}

/* /dev: a tmpfs of this sandbox with its own nodes, made read-only. */
static void prepare_dev(int report, const jail_args *ja, uid_t jail_root)
{
    char dev[4300], p[4400];
    snprintf(dev, sizeof dev, "%s/dev", ja->root);
    mount_tmpfs(report, dev, MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=64");
    own(report, dev, jail_root, 0);
    static const struct { const char *name; unsigned maj, min; } nodes[] = {
        {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7},
        {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, nodes[i].name);
        if (mknod(p, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0)
            fb_die_with_error(report, "cannot create %s", p);
        own(report, p, jail_root, 0666);
    }
    static const char *const links[][2] = {{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"},
                                           {"/proc/self/fd/1", "stdout"},
                                           {"/proc/self/fd/2", "stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, links[i][1]);
        if (symlink(links[i][0], p) < 0)
            fb_die_with_error(report, "cannot create %s", p);
        own(report, p, jail_root, 0);
    }
    /* Shared memory for python multiprocessing. */
    snprintf(p, sizeof p, "%s/shm", dev);
    if (mkdir(p, 01777) < 0)
        fb_die_with_error(report, "cannot create %s", p);
    own(report, p, jail_root, 01777);
    mount_tmpfs(report, p, MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=64m");
    own(report, p, jail_root, 01777);
    if (mount(NULL, dev, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
              "mode=0755,size=1m,nr_inodes=64") < 0)
        fb_die_with_error(report, "cannot make %s read-only", dev);
}

/* /workspace and /tmp, owned by the tool user, sized as configured (the
 * agent mounts the same in a VM). */
static void prepare_scratch(int report, const jail_args *ja, uid_t tool)
{
    const struct { const char *dir; uint64_t mib; mode_t mode; } s[] = {
        {"workspace", ja->sb->cfg.disk_mib, 0755},
        {"tmp", ja->sb->cfg.tmp_mib, 01777},
    };
    for (size_t i = 0; i < 2; i++) {
        char p[4400], opts[128];
        snprintf(p, sizeof p, "%s/%s", ja->root, s[i].dir);
        snprintf(opts, sizeof opts, "mode=0755,size=%llum,nr_inodes=%llu",
                 (unsigned long long)s[i].mib, (unsigned long long)(s[i].mib * 256 + 1024));
        mount_tmpfs(report, p, MS_NOSUID | MS_NODEV, opts);
        own(report, p, tool, s[i].mode);
    }
}

/* The /proc cover files, in the setup tmpfs beside the new root (outside
 * it: they are gone from the jail's view after pivot_root). */
static void prepare_stage(int report, const jail_args *ja)
{
    if (mkdir(ja->stage, 0755) < 0)
        fb_die_with_error(report, "cannot create %s", ja->stage);
    stage_file(report, ja->stage, "empty", "");
    stage_file(report, ja->stage, "cpuinfo", ja->cpuinfo);
    for (size_t i = 0; i < N_PROC_FIXED; i++) {
        char name[32];
        snprintf(name, sizeof name, "fixed%zu", i);
        stage_file(report, ja->stage, name, proc_fixed[i][1]);
    }
    stage_file(report, ja->stage, "meminfo", ja->meminfo);
    stage_file(report, ja->stage, "stat", ja->stat);
    stage_file(report, ja->stage, "loadavg", "0.00 0.00 0.00 1/1 1\n");
    stage_file(report, ja->stage, "boot_id", ja->boot_id);
    char p[4400];
    snprintf(p, sizeof p, "%s/emptydir", ja->stage);
    if (mkdir(p, 0555) < 0)
        fb_die_with_error(report, "cannot create %s", p);
}

/* The sandbox's mount points and its /proc cover files live in a small
 * tmpfs mounted over the runtime directory (run_dir) in the setup's own
 * mount namespace, never on the host's filesystem: the host keeps only
 * the sandbox's record file there (sandbox.c), and a disk-backed /run
 * pays no mkdir and rmdir per start (each freed directory block is a
 * synchronous discard on this host's ext4).  The tmpfs is this sandbox's
 * alone (a mount namespace of its own), so its root and stage need no
 * unique names, and the jail's mountinfo shows no sandbox id or host path.
 * It becomes read-only (the superblock, which the jail's root cannot
 * remount) once staged. */
static void prepare_setup_fs(int report, const jail_args *ja)
{
    mount_tmpfs(report, ja->sb->cfg.run_dir, MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=0755,size=1m,nr_inodes=64");
    if (mkdir(ja->root, 0755) < 0)
        fb_die_with_error(report, "cannot create %s", ja->root);
}

static void seal_setup_fs(int report, const jail_args *ja)
{
    if (mount(NULL, ja->sb->cfg.run_dir, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "size=1m,nr_inodes=64") < 0)
        fb_die_with_error(report, "cannot make %s read-only", ja->sb->cfg.run_dir);
}

/* The agent gives its tool processes a core limit of 1 (harden.c: the one
 * value that stops a host pipe core helper), which it cannot raise to if
 * the hard limit is 0.  Host root may lack CAP_SYS_RESOURCE (containers),
 * so a hard limit of 0 may be final: then refuse only where it matters, a
 * pipe core_pattern (a file pattern writes nothing at limit 0). */
static void limit_core(int report)
{
    struct rlimit core = {.rlim_cur = 1, .rlim_max = 1};
    if (setrlimit(RLIMIT_CORE, &core) == 0)
        return;
    char pattern[8] = "";
    int fd = open("/proc/sys/kernel/core_pattern", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        (void)!read(fd, pattern, sizeof pattern - 1);
        close(fd);
    }
    if (pattern[0] == '|')
        fb_child_die(report, "the host's core_pattern is a pipe and the hard core limit is 0, so "
                             "a crash in the jail would start the host's core helper; run forgebox "
                             "with a hard core limit of at least 1 (ulimit -Hc 1)");
}

static void jail_prepare(void *arg, int report)
{
    const jail_args *ja = arg;
    uid_t base = ja->sb->uid_base;
    limit_core(report);
    prepare_setup_fs(report, ja);
    if (move_mount(ja->rootfs_tree, "", AT_FDCWD, ja->root, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fb_die_with_error(report, "cannot attach the rootfs");
    struct statvfs sv;
    if (statvfs(ja->root, &sv) < 0 || !(sv.f_flag & ST_RDONLY) || !(sv.f_flag & ST_NOSUID) ||
        !(sv.f_flag & ST_NODEV))
        fb_child_die(report, "the rootfs is not mounted read-only, nosuid and nodev");
    close(ja->rootfs_tree);
    prepare_dev(report, ja, base);
    prepare_scratch(report, ja, base + JAIL_TOOL_UID);
    prepare_stage(report, ja);
    seal_setup_fs(report, ja);
}

/* ---- the jail's own steps (root of its namespaces) -------------------------- */

static void cover(int report, const char *src, const char *dst)
{
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0 && errno != ENOENT)
        fb_die_with_error(report, "cannot cover %s", dst);
}

static void cover_proc(int report, const jail_args *ja)
{
    char src[4400], dst[4400];
    snprintf(src, sizeof src, "%s/empty", ja->stage);
    for (const char *const *n = proc_empty; *n; n++) {
        snprintf(dst, sizeof dst, "%s/proc/%s", ja->root, *n);
        cover(report, src, dst);
    }
    static const char *const synthetic[][2] = {
        {"meminfo", "meminfo"}, {"stat", "stat"}, {"loadavg", "loadavg"},
        {"boot_id", "sys/kernel/random/boot_id"}, {"emptydir", "pressure"}, {"cpuinfo", "cpuinfo"},
    };
    for (size_t i = 0; i < sizeof synthetic / sizeof synthetic[0]; i++) {
        snprintf(src, sizeof src, "%s/%s", ja->stage, synthetic[i][0]);
        snprintf(dst, sizeof dst, "%s/proc/%s", ja->root, synthetic[i][1]);
        cover(report, src, dst);
    }
    for (size_t i = 0; i < N_PROC_FIXED; i++) {
        snprintf(src, sizeof src, "%s/fixed%zu", ja->stage, i);
        snprintf(dst, sizeof dst, "%s/proc/%s", ja->root, proc_fixed[i][0]);
        cover(report, src, dst);
    }
}

static void jail_child(void *arg, int report)
{
    const jail_args *ja = arg;
    char p[4300];
    /* A jail must never outlive its manager: make sure it did not die
     * before the parent-death signal was armed (its end of the report
     * pipe would be gone). */
    struct pollfd alive = {.fd = report, .events = POLLOUT};
    if (poll(&alive, 1, 0) < 0 || (alive.revents & (POLLERR | POLLHUP)))
        _exit(125);

    /* What the intermediate mounted is locked in this namespace and
     * pivot_root refuses a locked new root: enter a bind of it instead.
     * First, so that /proc and its ~40 covers are mounted once, on the
     * bind, rather than mounted, copied by the recursive bind and the
     * originals detached with the old root. */
    if (mount(ja->root, ja->root, NULL, MS_BIND | MS_REC, NULL) < 0)
        fb_die_with_error(report, "cannot bind the new root");
    snprintf(p, sizeof p, "%s/proc", ja->root);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0)
        fb_die_with_error(report, "cannot mount /proc");
    cover_proc(report, ja);
    if (sethostname("forgebox", 8) < 0)
        fb_die_with_error(report, "sethostname");

    snprintf(p, sizeof p, "%s/dev/null", ja->root);
    int devnull = open(p, O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        fb_die_with_error(report, "cannot open %s", p);
    fb_child_pivot(report, ja->root);
    /* The agent talks only through its channel, never to the host's tty. */
    int keep[2] = {ja->chan, ja->net};
    fb_child_setup_fds(report, devnull, keep, ja->net >= 0 ? 2 : 1);
    /* No drop here: the agent is root of its own user namespace only, and
     * drops everything itself for each tool process. */
    char *const argv_net[] = {"fb-agent", "--jail", "--channel-fd", "3", "--net-fd", "4", NULL};
    char *const argv_plain[] = {"fb-agent", "--jail", "--channel-fd", "3", NULL};
    char *const *argv = ja->net >= 0 ? argv_net : argv_plain;
    char *const envp[] = {NULL};
    execve("/sbin/fb-agent", argv, envp);
    fb_die_with_error(report, "cannot execute /sbin/fb-agent in the rootfs");
}

static uint64_t jail_cgroup_memory(const fb_sandbox *sb)
{
    return sb->cfg.memory_mib * 1024 * 1024;
}

static void jail_args_free(jail_args *ja)
{
    free(ja->cpuinfo);
}

static int jail_start(fb_sandbox *sb, fb_err *err)
{
    __attribute__((cleanup(jail_args_free))) jail_args ja = {.sb = sb, .net = -1};
    snprintf(ja.root, sizeof ja.root, "%s/root", sb->cfg.run_dir);
    snprintf(ja.stage, sizeof ja.stage, "%s/stage", sb->cfg.run_dir);
    format_meminfo(&ja, jail_cgroup_memory(sb));
    format_stat(&ja, (unsigned)sb->cfg.vcpus);
    format_boot_id(&ja);
    pick_cpus(&ja, sb);
    if (format_cpuinfo(&ja, (unsigned)sb->cfg.vcpus, err) < 0)
        return -1;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return fb_fail_errno(err, "socketpair");
    int tree = open_rootfs_tree(sb, err);
    if (tree < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    fb_trace("jail: rootfs mounted");
    /* The egress bridge: fb-agent passes each accepted connection's fd;
     * SEQPACKET keeps one fd per message. */
    int nv[2] = {-1, -1};
    if (sb->cfg.net_adopt && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, nv) < 0) {
        close(sv[0]);
        close(sv[1]);
        close(tree);
        return fb_fail_errno(err, "socketpair");
    }
    ja.net = nv[1];
    ja.chan = sv[1];
    ja.rootfs_tree = tree;
    /* The network and IPC namespaces made meanwhile (netns.c), or new
     * ones in the clone where the thread could not make them. */
    int net_ns = -1, ipc_ns = -1, why_errno = 0;
    const char *why = NULL;
    bool ahead = fb_netns_take(&sb->netns, &net_ns, &ipc_ns, &why, &why_errno) == 0;
    if (!ahead) {
        char msg[256];
        snprintf(msg, sizeof msg, "jail: network and IPC namespaces made in the clone (%s: %s)", why,
                 strerror(why_errno));
        fb_trace(msg);
        /* Then they belong to the jail's user namespace, whose root
         * (fb-agent) holds capabilities over them: worth an operator's
         * look, though the jail is as it was before session 7. */
        fprintf(stderr, "forgebox: warning: sandbox %s: %s\n", sb->id, msg + strlen("jail: "));
    }
    fb_spawn sp = {
        .clone_flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWCGROUP |
                       (ahead ? 0 : CLONE_NEWIPC | CLONE_NEWNET),
        .join_net_ipc = ahead,
        .net_fd = net_ns,
        .ipc_fd = ipc_ns,
        .cg = &sb->cg,
        .userns = true,
        .uid_base = sb->uid_base,
        .timens = true,
        /* Set on the intermediate by the manager; the jail inherits them. */
        .cpus = CPU_COUNT(&ja.cpus) > 0 ? &ja.cpus : NULL,
        .prepare = jail_prepare,
        .child = jail_child,
        .arg = &ja,
    };
    pid_t pid = fb_confine_spawn(&sp, err);
    close(sv[1]);
    close(tree);
    if (ahead) {
        close(net_ns);
        close(ipc_ns);
    }
    if (nv[1] >= 0)
        close(nv[1]);
    if (pid < 0) {
        close(sv[0]);
        if (nv[0] >= 0)
            close(nv[0]);
        return -1;
    }
    sb->pid = pid;
    sb->chan_fd = sv[0];
    sb->net_fd = nv[0];
    return 0;
}

/* While the manager checks the image, takes the slot and makes the
 * cgroup: the network and IPC namespaces (netns.c), with lo up for a
 * network grant (fb-agent listens on 127.0.0.1). */
static void jail_begin(fb_sandbox *sb)
{
    fb_netns_begin(&sb->netns, sb->cfg.net_adopt != NULL);
}

static uint64_t jail_cgroup_pids(const fb_sandbox *sb)
{
    /* The agent itself plus the tool processes' limit. */
    return sb->cfg.pids + 8;
}

const struct fb_backend_ops fb_backend_jail = {
    .name = "jail",
    /* rootfs.ext4, checked with the kernel and initramfs it was sealed
     * with (one set of files for both backends), and rootfs.erofs when
     * the image has one. */
    .image_needs = FB_IMAGE_NEEDS_VM | FB_IMAGE_NEEDS_EROFS,
    .cgroup_memory = jail_cgroup_memory,
    .cgroup_pids = jail_cgroup_pids,
    .begin = jail_begin,
    .start = jail_start,
    .kill_stops = true,
    .run_record_file = true,
};

/*
 * pid1.c - mounts, reaping and power-off for the agent as init (pid1.h).
 *
 * /dev is a small tmpfs with only the nodes a program expects (null, zero,
 * full, random, urandom, tty, shm, pts-less).  In a VM the agent makes it
 * and the /workspace and /tmp tmpfs.  In a jail the host has made all of
 * them already, as host root (a user namespace cannot mknod, and a tmpfs
 * mounted inside it shows its owner's host uid in mountinfo), and they are
 * left alone.  /sys is never mounted.  /proc is mounted with hidepid=2 so
 * tool processes see only their own processes, and /proc/sys,
 * /proc/sysrq-trigger and friends are made read-only or hidden as container
 * runtimes do; in a jail the host has also covered the files that would
 * show host-wide facts (jail.c).
 *
 * Before /proc/sys goes read-only: inotify limits of the sandbox's own
 * (in a jail they sit under the per-slot-uid limits the host enforces),
 * and in a VM Yama's ptrace scope 3 (no ptrace attach at all, which covers
 * /proc/PID/mem; harden.c adds a Landlock domain per exec in both).
 */
#define _GNU_SOURCE
#include "agent/pid1.h"
#include "agent/harden.h"

#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

static int do_mount(const char *src, const char *dst, const char *type, unsigned long flags,
                    const char *data, fb_err *err)
{
    if (mount(src, dst, type, flags, data) < 0)
        return fb_fail_errno(err, "cannot mount %s on %s", type ? type : src, dst);
    return 0;
}

/* Makes path read-only by bind-mounting it onto itself and remounting. */
static int make_readonly(const char *path, fb_err *err)
{
    if (mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) {
        if (errno == ENOENT)
            return 0;
        return fb_fail_errno(err, "cannot bind %s", path);
    }
    if (mount(NULL, path, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
              NULL) < 0)
        return fb_fail_errno(err, "cannot make %s read-only", path);
    return 0;
}

/* Hides a file under /proc behind /dev/null. */
static int mask_file(const char *path, fb_err *err)
{
    if (mount("/dev/null", path, NULL, MS_BIND, NULL) < 0 && errno != ENOENT)
        return fb_fail_errno(err, "cannot mask %s", path);
    return 0;
}

static int make_node(const char *path, mode_t mode, unsigned maj, unsigned min, fb_err *err)
{
    if (mknod(path, S_IFCHR | mode, makedev(maj, min)) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", path);
    if (chmod(path, mode) < 0)
        return fb_fail_errno(err, "cannot chmod %s", path);
    return 0;
}

static int setup_dev_vm(fb_err *err)
{
    /* The initramfs moved its devtmpfs here so that we could open the
     * agent port; it exposes every disk, so replace it with a tmpfs. */
    if (umount2("/dev", MNT_DETACH) < 0 && errno != EINVAL && errno != ENOENT)
        return fb_fail_errno(err, "cannot unmount the initramfs /dev");
    if (do_mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m,nr_inodes=64",
                 err) < 0)
        return -1;
    if (make_node("/dev/null", 0666, 1, 3, err) < 0 || make_node("/dev/zero", 0666, 1, 5, err) < 0 ||
        make_node("/dev/full", 0666, 1, 7, err) < 0 || make_node("/dev/random", 0666, 1, 8, err) < 0 ||
        make_node("/dev/urandom", 0666, 1, 9, err) < 0 || make_node("/dev/tty", 0666, 5, 0, err) < 0)
        return -1;
    /* /dev extras: shared memory for python multiprocessing and the
     * conventional fd symlinks. */
    if (mkdir("/dev/shm", 01777) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create /dev/shm");
    if (do_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                 "mode=1777,size=64m", err) < 0)
        return -1;
    static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
                                           {"/proc/self/fd/0", "/dev/stdin"},
                                           {"/proc/self/fd/1", "/dev/stdout"},
                                           {"/proc/self/fd/2", "/dev/stderr"}};
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
            return fb_fail_errno(err, "cannot create %s", links[i][1]);
    if (mount(NULL, "/dev", NULL, MS_REMOUNT | MS_NOSUID | MS_NOEXEC | MS_RDONLY, "mode=0755,size=1m") < 0)
        return fb_fail_errno(err, "cannot make /dev read-only");
    return 0;
}

/* QEMU's emulator (TCG, no KVM) names its CPU model (-cpu max, vm.c)
 * "QEMU TCG CPU version ..." in the CPUID brand string; KVM passes the
 * host's (-cpu host). */
static bool under_tcg(void)
{
    unsigned int max = 0, r[12], b, c, d;
    if (!__get_cpuid(0x80000000u, &max, &b, &c, &d) || max < 0x80000004u)
        return false;
    for (unsigned i = 0; i < 3; i++)
        __cpuid(0x80000002u + i, r[4 * i], r[4 * i + 1], r[4 * i + 2], r[4 * i + 3]);
    static const char tcg[] = "QEMU TCG CPU ";
    return memcmp(r, tcg, sizeof tcg - 1) == 0;
}

/* Settings under /proc/sys, written while it is still writable. */
static int tune_sysctls(fb_agent_mode mode, fb_err *err)
{
    if (fb_write_file("/proc/sys/user/max_inotify_instances", "128", err) < 0 ||
        fb_write_file("/proc/sys/user/max_inotify_watches", "65536", err) < 0)
        return -1;
    if (mode == FB_MODE_VM && access("/proc/sys/kernel/yama/ptrace_scope", F_OK) == 0 &&
        fb_write_file("/proc/sys/kernel/yama/ptrace_scope", "3", err) < 0)
        return -1;
    /* Under TCG, seccomp filters run in the BPF interpreter, not as JIT
     * code: every exec loads its filter afresh, and each JIT image is new
     * guest code that TCG translates again for every exec (the interpreter
     * is kernel text, translated once).  Same verdicts either way.  The
     * JIT stays on under KVM, where the interpreter would be the
     * speculative-execution gadget CONFIG_BPF_JIT_ALWAYS_ON guards
     * against; TCG executes no guest code speculatively. */
    if (mode == FB_MODE_VM && under_tcg())
        (void)fb_write_file("/proc/sys/net/core/bpf_jit_enable", "0", NULL);
    return 0;
}

static fb_agent_mode agent_mode;

int fb_pid1_mount_base(fb_agent_mode mode, fb_err *err)
{
    agent_mode = mode;
    if (mode == FB_MODE_VM && setup_dev_vm(err) < 0)
        return -1;

    /* In a jail the host mounted /proc before pivot_root: a user namespace
     * may only mount proc while a full proc mount is visible. */
    if (mode == FB_MODE_VM &&
        do_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2", err) < 0)
        return -1;
    if (tune_sysctls(mode, err) < 0)
        return -1;
    static const char *const ro_paths[] = {"/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq",
                                           "/proc/acpi", "/proc/scsi", NULL};
    for (const char *const *p = ro_paths; *p; p++)
        if (make_readonly(*p, err) < 0)
            return -1;
    static const char *const masked[] = {"/proc/sysrq-trigger", "/proc/kcore", "/proc/kmsg",
                                         "/proc/keys", "/proc/timer_list", "/proc/kallsyms",
                                         "/proc/sched_debug", NULL};
    /* The VM's command line is its own, but carries the host's TSC rate. */
    if (mode == FB_MODE_VM && mask_file("/proc/cmdline", err) < 0)
        return -1;
    for (const char *const *p = masked; *p; p++)
        if (mask_file(*p, err) < 0)
            return -1;
    return 0;
}

static int mount_scratch(const char *path, uint64_t mib, fb_err *err)
{
    char opts[128];
    snprintf(opts, sizeof opts, "mode=0755,uid=%d,gid=%d,size=%llum,nr_inodes=%llu", FB_TOOL_UID,
             FB_TOOL_GID, (unsigned long long)mib, (unsigned long long)(mib * 256 + 1024));
    return do_mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, opts, err);
}

int fb_pid1_mount_scratch(uint64_t workspace_mib, uint64_t tmp_mib, fb_err *err)
{
    if (agent_mode == FB_MODE_JAIL)
        return 0; /* the host mounted them, sized from the same config */
    if (mount_scratch("/workspace", workspace_mib, err) < 0 || mount_scratch("/tmp", tmp_mib, err) < 0)
        return -1;
    if (chmod("/tmp", 01777) < 0)
        return fb_fail_errno(err, "cannot chmod /tmp");
    return 0;
}

void fb_pid1_kill_all(void)
{
    /* As PID 1 of its namespace, kill(-1) reaches everything but us. */
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
}

void fb_pid1_poweroff(fb_agent_mode mode, int status)
{
    fb_pid1_kill_all();
    if (mode == FB_MODE_JAIL)
        _exit(status);
    sync();
    reboot(RB_POWER_OFF);
    /* If power-off is not wired up, a reset ends QEMU (-no-reboot). */
    reboot(RB_AUTOBOOT);
    _exit(status);
}

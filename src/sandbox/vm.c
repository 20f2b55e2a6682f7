/*
 * vm.c - the `vm` backend: each sandbox is a QEMU microvm.
 *
 * The guest gets its own kernel, a read-only virtio-blk root, one
 * virtio-serial port for the agent and a serial console, nothing else: no
 * NIC, no shared filesystem, no option ROMs.  KVM is used only where the
 * host really has hardware virtualization; elsewhere QEMU runs under TCG,
 * and we say so, because upstream QEMU does not treat TCG as a security
 * boundary.
 *
 * QEMU itself is jailed the way Firecracker's jailer jails Firecracker: new
 * mount, pid, ipc, uts, net and cgroup namespaces; a tmpfs root holding
 * only /usr (read-only), the loader cache, the three image files (read-only)
 * and its own /dev nodes; an unprivileged uid owned by this sandbox's slot;
 * no capabilities, no_new_privs; QEMU's own seccomp filter with every deny
 * option; and the sandbox cgroup's memory, pids and CPU limits.  Its fds:
 * 3 is the agent channel, 4 (and stdout/stderr) the console, read by the
 * manager into a small ring for error reports.
 *
 * Snapshots (snapshot.h): the first VM of a shape starts paused with a QMP
 * monitor on fd 5, is let run until its agent opens the channel (QMP's
 * VSERPORT_CHANGE), is stopped and migrated into the snapshot file (a
 * descriptor passed over QMP: `-sandbox spawn=deny` rules out exec:
 * addresses, and QEMU never gets a path), then continues and becomes a
 * sandbox like any other.  (QEMU 7.2's migrate takes only a named fd,
 * not an inherited number, hence getfd; and a VM saved while stopped
 * would restore stopped, hence migration.store-global-state=off.)  Later
 * VMs of that shape get the verified file as fd 5 and `-incoming fd:5`,
 * and QMP on fd 6 until QEMU runs them: they resume where the agent waits
 * for hello, and hello gives them their own entropy and clock.  One that
 * QEMU cannot load is deleted and that VM boots cold instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <jansson.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "image/image.h"
#include "sandbox/backend.h"
#include "sandbox/confine.h"
#include "sandbox/qemu_stub.h"
#include "sandbox/snapshot.h"
#include "sandbox/supervisor.h"

#define QEMU_BIN "/usr/bin/qemu-system-x86_64"
/* Host memory QEMU needs beyond guest RAM (TCG adds its translation cache). */
#define VM_OVERHEAD_KVM_MIB 96
#define VM_OVERHEAD_TCG_MIB 192
/* TCG's translation cache (sandbox.vm_tcg_cache_mib, default
 * FB_DEFAULT_TCG_CACHE_MIB = 20 MiB), sized deliberately: it is the largest part of a
 * VM's host memory beyond guest RAM once the guest has run a while, since
 * QEMU keeps every page of it it has written.  Measured (bench/README.md,
 * sessions 5 and 6; restored VMs): execs of /bin/true, Python imports and
 * git run as fast at 20 MiB as at 32 or 64, while at 16 or 18 MiB the
 * cache no longer holds a busy workload's working set (kernel, fb-agent,
 * Python, git), flushes over and over and that workload takes 1.8-2x as
 * long (with the guest's ASLR off, below, execs of /bin/true alone would
 * fit in 16; re-measured in session 8 with it off: a busy workload 1.3x
 * slower at 16, 1.6x at 14, where each exec also costs 1.6x the CPU).
 * 20 MiB keeps a margin above that cliff and a busy VM costs 12 MiB less
 * than at 32.  An operator who wants density more than a busy VM's speed
 * sets 14-16 (docs/configuration.md): a busy VM then stays within 30 MiB
 * beyond guest RAM.  Under KVM there is no cache.  The memory cgroup's
 * allowance for QEMU grows with it. */

static bool cpu_has_hw_virt(void)
{
    enum { CAP = 1 << 16 };
    cleanup_free char *buf = malloc(CAP);
    if (!buf || fb_read_file("/proc/cpuinfo", buf, CAP, NULL) < 0)
        return false;
    char *flags = strstr(buf, "\nflags");
    if (!flags)
        return false;
    char *end = strchr(flags + 1, '\n');
    if (end)
        *end = '\0';
    return strstr(flags, " vmx") || strstr(flags, " svm");
}

fb_accel fb_vm_detect_accel(char *why, size_t cap)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "TCG: /dev/kvm is not available (%s)", strerror(errno));
        return FB_ACCEL_TCG;
    }
    int api = ioctl(fd, KVM_GET_API_VERSION, 0);
    close(fd);
    if (api != KVM_API_VERSION) {
        snprintf(why, cap, "TCG: /dev/kvm answers API version %d, not %d", api, KVM_API_VERSION);
        return FB_ACCEL_TCG;
    }
    /* A nested, paravirtualised KVM (PVM) offers /dev/kvm without hardware
     * virtualization and can only run specially built guest kernels: a
     * stock kernel hangs at its first instructions. */
    if (access("/sys/module/kvm_pvm", F_OK) == 0) {
        snprintf(why, cap, "TCG: /dev/kvm is PVM (paravirtualised nested KVM), which cannot boot "
                           "a stock guest kernel");
        return FB_ACCEL_TCG;
    }
    if (!cpu_has_hw_virt()) {
        snprintf(why, cap, "TCG: /dev/kvm exists but the CPU exposes no vmx/svm, so it is not "
                           "backed by hardware virtualization");
        return FB_ACCEL_TCG;
    }
    snprintf(why, cap, "KVM: hardware virtualization via /dev/kvm");
    return FB_ACCEL_KVM;
}

/* The host's TSC frequency in kHz, for the guest's tsc_early_khz=.
 *
 * Under TCG the guest's TSC ticks at the host's rate, and the kernel's
 * PIT-based calibration of it fails at random under emulation, after which
 * the guest hangs in early boot (seen in 2 of 6 to 5 of 8 boots).  Telling
 * it the rate skips the calibration.  Measured once per host boot (rdtsc
 * against CLOCK_MONOTONIC_RAW over 20 ms) and remembered in the run dir. */
static uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static uint64_t measure_tsc_khz(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC_RAW, &a);
    uint64_t t0 = rdtsc();
    struct timespec d = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
    while (nanosleep(&d, &d) < 0 && errno == EINTR)
        ;
    clock_gettime(CLOCK_MONOTONIC_RAW, &b);
    uint64_t t1 = rdtsc();
    uint64_t ns = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000ull + (uint64_t)b.tv_nsec -
                  (uint64_t)a.tv_nsec;
    return ns ? (t1 - t0) * 1000000ull / ns : 0;
}

static uint64_t host_tsc_khz(const char *run_dir)
{
    char boot[64] = "", path[4200], buf[128];
    (void)fb_read_file("/proc/sys/kernel/random/boot_id", boot, sizeof boot, NULL);
    boot[strcspn(boot, "\n")] = '\0';
    snprintf(path, sizeof path, "%s/tsc-khz", run_dir);
    if (fb_read_file(path, buf, sizeof buf, NULL) == 0) {
        char id[64];
        unsigned long long khz;
        if (sscanf(buf, "%63s %llu", id, &khz) == 2 && strcmp(id, boot) == 0 && khz > 0)
            return khz;
    }
    uint64_t khz = measure_tsc_khz();
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        snprintf(buf, sizeof buf, "%s %llu\n", boot, (unsigned long long)khz);
        if (fb_write_all(fd, buf, strlen(buf)) == 0 && close(fd) == 0)
            rename(tmp, path);
        else
            unlink(tmp);
    }
    return khz;
}

typedef struct vm_args {
    const fb_sandbox *sb;
    int chan, console;
    int extra[2];       /* fds 5, 6: the snapshot and/or the QMP socket; -1: none */
    bool stub_kernel;   /* restoring: /image/vmlinuz is only the kernel's boot header */
    bool stub_capstone; /* QEMU loads qemu_stub.h's Capstone stub */
    char *const *argv;
} vm_args;

static void make_dir(int report, const char *root, const char *rel, mode_t mode)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        fb_die_with_error(report, "cannot create %s", p);
}

static void bind_file_ro(int report, const char *src, const char *dst)
{
    int fd = open(dst, O_CREAT | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0)
        fb_die_with_error(report, "cannot create %s", dst);
    close(fd);
    fb_child_bind_ro(report, src, dst, true);
}

/* A VM restored from a snapshot never runs its firmware or kernel loader
 * again: the booted kernel is in the guest RAM the snapshot brings.  Yet
 * QEMU reads the whole -kernel file into a buffer of its own at start and
 * keeps it for the firmware's fw_cfg reads (13.5 MiB of resident memory
 * per VM for Debian's kernel, never used after a restore).  Such a VM gets
 * instead a file holding only the kernel's setup sectors (the boot header
 * QEMU parses to place the command line and initrd) and one zero page, so
 * its argv, and so its snapshot shape, stays the same.  A guest reboot
 * ends QEMU (-no-reboot), so nothing ever boots the stub. */
static void write_stub_kernel(int report, const char *src, const char *dst)
{
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        fb_die_with_error(report, "cannot open %s", src);
    unsigned char buf[4096];
    /* The setup sectors count (offset 0x1f1; 0 means 4), plus the boot
     * sector: at most 256 sectors, 128 KiB. */
    if (pread(in, buf, 0x1f2, 0) != 0x1f2)
        fb_die_with_error(report, "cannot read the kernel header of %s", src);
    size_t setup = ((size_t)(buf[0x1f1] ? buf[0x1f1] : 4) + 1) * 512;
    int out = open(dst, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (out < 0)
        fb_die_with_error(report, "cannot create %s", dst);
    for (size_t off = 0; off < setup;) {
        size_t want = setup - off < sizeof buf ? setup - off : sizeof buf;
        ssize_t n = pread(in, buf, want, (off_t)off);
        if (n <= 0)
            fb_die_with_error(report, "cannot read the kernel setup of %s", src);
        if (fb_write_all(out, buf, (size_t)n) < 0)
            fb_die_with_error(report, "cannot write %s", dst);
        off += (size_t)n;
    }
    memset(buf, 0, sizeof buf);
    if (fb_write_all(out, buf, sizeof buf) < 0 || close(out) < 0)
        fb_die_with_error(report, "cannot write %s", dst);
    close(in);
}

/* QEMU's Capstone stub (qemu_stub.h) into its root, where LD_LIBRARY_PATH
 * points: 13 KiB of tmpfs instead of 1.3 MiB of relocated tables per VM. */
static void write_capstone_stub(int report, const char *root)
{
    char p[4400];
    make_dir(report, root, FB_QEMU_STUB_DIR + 1, 0755);
    snprintf(p, sizeof p, "%s%s/%s", root, FB_QEMU_STUB_DIR, FB_QEMU_CAPSTONE_SONAME);
    int fd = open(p, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0444);
    if (fd < 0 || fb_write_all(fd, fb_qemu_capstone_stub, fb_qemu_capstone_stub_len) < 0 || close(fd) < 0)
        fb_die_with_error(report, "cannot write %s", p);
}

static void vm_child(void *arg, int report)
{
    const vm_args *va = arg;
    const fb_sandbox *sb = va->sb;
    uid_t uid = sb->uid_base;
    char root[4200], p[4400], src[4400];
    snprintf(root, sizeof root, "%s/root", sb->run_path);

    if (unshare(CLONE_NEWCGROUP) < 0)
        fb_die_with_error(report, "cannot create the cgroup namespace");
    fb_child_private_mounts(report);
    if (mount("tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755,size=256k,nr_inodes=64") < 0)
        fb_die_with_error(report, "cannot mount the QEMU root");
    make_dir(report, root, "usr", 0755);
    make_dir(report, root, "etc", 0755);
    make_dir(report, root, "dev", 0755);
    make_dir(report, root, "proc", 0555);
    make_dir(report, root, "image", 0755);
    snprintf(p, sizeof p, "%s/usr", root);
    fb_child_bind_ro(report, "/usr", p, false);
    /* Merged /usr: the top-level directories are symlinks into it. */
    static const char *const top[] = {"bin", "sbin", "lib", "lib64", NULL};
    for (const char *const *t = top; *t; t++) {
        char host[64], target[256];
        snprintf(host, sizeof host, "/%s", *t);
        ssize_t n = readlink(host, target, sizeof target - 1);
        snprintf(p, sizeof p, "%s/%s", root, *t);
        if (n > 0) {
            target[n] = '\0';
            if (symlink(target, p) < 0)
                fb_die_with_error(report, "cannot link %s", p);
        } else if (access(host, F_OK) == 0) {
            make_dir(report, root, *t, 0755);
            fb_child_bind_ro(report, host, p, false);
        }
    }
    snprintf(p, sizeof p, "%s/etc/ld.so.cache", root);
    if (access("/etc/ld.so.cache", F_OK) == 0)
        bind_file_ro(report, "/etc/ld.so.cache", p);

    /* Our own device nodes, as Firecracker's jailer makes them. */
    struct { const char *name; unsigned maj, min; mode_t mode; bool own; } nodes[] = {
        {"null", 1, 3, 0666, false},  {"zero", 1, 5, 0666, false},
        {"random", 1, 8, 0444, false}, {"urandom", 1, 9, 0444, false},
        {"kvm", 10, 232, 0600, true},
    };
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++) {
        if (nodes[i].own && sb->accel != FB_ACCEL_KVM)
            continue;
        snprintf(p, sizeof p, "%s/dev/%s", root, nodes[i].name);
        if (mknod(p, S_IFCHR | nodes[i].mode, makedev(nodes[i].maj, nodes[i].min)) < 0 ||
            chmod(p, nodes[i].mode) < 0)
            fb_die_with_error(report, "cannot create %s", p);
        if (nodes[i].own && chown(p, uid, uid) < 0)
            fb_die_with_error(report, "cannot chown %s", p);
    }
    snprintf(p, sizeof p, "%s/proc", root);
    if (mount("proc", p, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0)
        fb_die_with_error(report, "cannot mount /proc");
    static const char *const files[] = {"vmlinuz", "initrd.img", "rootfs.ext4", NULL};
    for (const char *const *f = files; *f; f++) {
        snprintf(src, sizeof src, "%s/%s", sb->image_dir, *f);
        snprintf(p, sizeof p, "%s/image/%s", root, *f);
        if (va->stub_kernel && strcmp(*f, "vmlinuz") == 0)
            write_stub_kernel(report, src, p);
        else
            bind_file_ro(report, src, p);
    }
    if (va->stub_capstone)
        write_capstone_stub(report, root);
    if (mount(NULL, root, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID, "size=256k,nr_inodes=64") < 0)
        fb_die_with_error(report, "cannot make the QEMU root read-only");
    if (sethostname("forgebox-vmm", 12) < 0)
        fb_die_with_error(report, "sethostname");

    fb_child_pivot(report, root);
    int keep[4] = {va->chan, va->console, va->extra[0], va->extra[1]};
    int nkeep = 2;
    while (nkeep < 4 && keep[nkeep] >= 0)
        nkeep++;
    fb_child_setup_fds(report, va->console, keep, nkeep);
    fb_child_drop_privileges(report, uid, uid);
    /* No transparent huge pages for QEMU (the flag survives execve).
     * QEMU madvises guest RAM and its translation cache MADV_HUGEPAGE, so
     * on a host with THP "madvise" or "always" every 2 MiB the guest or
     * TCG touches at all becomes resident whole: a restored 128 MiB VM
     * held 117 MiB of guest RAM and 18 MiB of cache, 90 and 17 without
     * (bench/README.md).  Density over a few percent of TLB reach. */
    if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) < 0)
        fb_die_with_error(report, "cannot disable transparent huge pages for QEMU");
    /* The loader looks in LD_LIBRARY_PATH before its cache: there it finds
     * the Capstone stub, and nothing else. */
    char *const envp[] = {va->stub_capstone ? "LD_LIBRARY_PATH=" FB_QEMU_STUB_DIR : NULL, NULL};
    execve(QEMU_BIN, va->argv, envp);
    fb_die_with_error(report, "cannot execute %s", QEMU_BIN);
}


/* ---- snapshots: the shape, and saving one over QMP ---------------------------- */

/* Everything a saved VM state depends on besides the guest's own doing
 * (snapshot.h): the argv, the QEMU binary, the image, the host's boot. */
static int vm_shape(const fb_sandbox *sb, char *const *argv, char *out, size_t cap, fb_err *err)
{
    struct stat st;
    if (stat(QEMU_BIN, &st) < 0)
        return fb_fail_errno(err, "cannot stat %s", QEMU_BIN);
    char manifest[4200], digest[65], boot[64] = "";
    snprintf(manifest, sizeof manifest, "%s/manifest.json", sb->image_dir);
    if (fb_image_file_digest(manifest, digest, NULL, err) < 0)
        return -1;
    (void)fb_read_file("/proc/sys/kernel/random/boot_id", boot, sizeof boot, NULL);
    boot[strcspn(boot, "\n")] = '\0';
    int n = snprintf(out, cap,
                     "forgebox vm snapshot 1\nqemu %s %llu %llu %llu %lld.%09ld %lld.%09ld\n"
                     "image manifest sha256 %s\nhost boot %s\nargv",
                     QEMU_BIN, (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                     (unsigned long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
                     (long long)st.st_ctim.tv_sec, st.st_ctim.tv_nsec, digest, boot);
    for (int i = 1; argv[i] && n > 0 && (size_t)n < cap; i++) {
        if (strcmp(argv[i], "-name") == 0 && argv[i + 1]) {
            i++; /* the VM's own name is no part of its state */
            continue;
        }
        n += snprintf(out + n, cap - (size_t)n, " %s", argv[i]);
    }
    if (n < 0 || (size_t)n >= cap)
        return fb_fail(err, "VM shape description too long");
    return 0;
}

typedef struct qmp {
    int fd;
    char buf[16384];
    size_t len;
    bool port_open;    /* VSERPORT_CHANGE: the agent opened its channel */
} qmp;

/* The next message from QEMU (one JSON object a line), or NULL with err. */
static json_t *qmp_next(qmp *q, uint64_t deadline_ns, fb_err *err)
{
    for (;;) {
        char *nl = memchr(q->buf, '\n', q->len);
        if (nl) {
            *nl = '\0';
            json_error_t je;
            json_t *j = json_loads(q->buf, 0, &je);
            size_t used = (size_t)(nl - q->buf) + 1;
            memmove(q->buf, nl + 1, q->len - used);
            q->len -= used;
            if (!j || !json_is_object(j)) {
                json_decref(j);
                fb_fail(err, "QMP: unreadable message");
                return NULL;
            }
            const char *ev = json_string_value(json_object_get(j, "event"));
            if (ev && strcmp(ev, "VSERPORT_CHANGE") == 0) {
                json_t *data = json_object_get(j, "data");
                const char *id = json_string_value(json_object_get(data, "id"));
                if (id && strcmp(id, "agentport") == 0)
                    q->port_open = json_is_true(json_object_get(data, "open"));
            }
            return j;
        }
        if (q->len == sizeof q->buf) {
            fb_fail(err, "QMP: message too long");
            return NULL;
        }
        uint64_t now = fb_now_ns();
        if (now >= deadline_ns) {
            fb_fail(err, "QMP: no answer in time");
            return NULL;
        }
        struct pollfd p = {.fd = q->fd, .events = POLLIN};
        int ms = (int)((deadline_ns - now) / 1000000u) + 1;
        int pr = poll(&p, 1, ms);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = read(q->fd, q->buf + q->len, sizeof q->buf - q->len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (r <= 0) {
            fb_fail(err, "QMP: QEMU closed its monitor (did the VM end?)");
            return NULL;
        }
        q->len += (size_t)r;
    }
}

/* Runs one command (args taken; pass_fd >= 0 travels with it as
 * SCM_RIGHTS), skipping events; returns its "return" value (a new
 * reference) or NULL with err. */
static json_t *qmp_call(qmp *q, const char *cmd, json_t *args, int pass_fd, uint64_t deadline_ns,
                        fb_err *err)
{
    json_t *req = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(req, "arguments", args);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        fb_fail(err, "out of memory");
        return NULL;
    }
    size_t len = strlen(text);
    text[len++] = '\n'; /* replaces the NUL; the text is not used as a string again */
    struct iovec iov = {.iov_base = text, .iov_len = len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (pass_fd >= 0) {
        memset(&u, 0, sizeof u);
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
    }
    ssize_t w;
    while ((w = sendmsg(q->fd, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    free(text);
    if (w != (ssize_t)len) {
        fb_fail_errno(err, "QMP: cannot send %s", cmd);
        return NULL;
    }
    for (;;) {
        json_t *j = qmp_next(q, deadline_ns, err);
        if (!j)
            return NULL;
        json_t *ret = json_object_get(j, "return");
        json_t *e = json_object_get(j, "error");
        if (ret) {
            json_incref(ret);
            json_decref(j);
            return ret;
        }
        if (e) {
            fb_fail(err, "QMP %s: %s", cmd, json_string_value(json_object_get(e, "desc")));
            json_decref(j);
            return NULL;
        }
        json_decref(j); /* an event */
    }
}

static int qmp_ok(qmp *q, const char *cmd, json_t *args, int pass_fd, uint64_t deadline_ns, fb_err *err)
{
    json_t *r = qmp_call(q, cmd, args, pass_fd, deadline_ns, err);
    json_decref(r);
    return r ? 0 : -1;
}

/* The VM was started paused (-S) with QMP on q: lets it boot to the
 * agent's open channel, saves it into snap_fd, lets it go on.  Whatever
 * happens, the VM is left running (a failed save costs only the snapshot). */
static int save_snapshot(qmp *q, int snap_fd, fb_err *err)
{
    uint64_t deadline = fb_now_ns() + 120ull * 1000000000u;
    json_t *greeting = qmp_next(q, deadline, err);
    json_decref(greeting);
    if (!greeting || qmp_ok(q, "qmp_capabilities", NULL, -1, deadline, err) < 0)
        return -1;
    /* The default rate limit (32 MiB/s) would spread a local save over
     * seconds; the VM is stopped while it runs anyway. */
    if (qmp_ok(q, "migrate-set-parameters", json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), -1,
               deadline, err) < 0 ||
        qmp_ok(q, "cont", NULL, -1, deadline, err) < 0)
        return -1;
    fb_trace("create: booting to make a snapshot");
    while (!q->port_open) {
        json_t *j = qmp_next(q, deadline, err);
        if (!j)
            return -1;
        json_decref(j);
    }
    fb_trace("create: agent channel open, saving");
    int rc = -1;
    if (qmp_ok(q, "stop", NULL, -1, deadline, err) < 0)
        goto out;
    if (qmp_ok(q, "getfd", json_pack("{s:s}", "fdname", "snapshot"), snap_fd, deadline, err) < 0 ||
        qmp_ok(q, "migrate", json_pack("{s:s}", "uri", "fd:snapshot"), -1, deadline, err) < 0)
        goto out;
    for (;;) {
        json_t *r = qmp_call(q, "query-migrate", NULL, -1, deadline, err);
        if (!r)
            goto out;
        const char *status = json_string_value(json_object_get(r, "status"));
        if (status && strcmp(status, "completed") == 0) {
            json_decref(r);
            break;
        }
        if (!status || strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
            const char *why = json_string_value(json_object_get(r, "error-desc"));
            fb_fail(err, "QEMU could not save the VM: %s", why ? why : status ? status : "?");
            json_decref(r);
            goto out;
        }
        json_decref(r);
        struct timespec d = {.tv_sec = 0, .tv_nsec = 5 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    rc = 0;
out:;
    fb_err cerr = {{0}};
    if (qmp_ok(q, "cont", NULL, -1, fb_now_ns() + 10ull * 1000000000u, &cerr) < 0 && rc == 0) {
        fb_fail(err, "%s", cerr.msg);
        rc = -1;
    }
    fb_trace("create: snapshot saved, VM continues");
    return rc;
}

/* A restored VM (-incoming, QMP on q): waits until QEMU has loaded the
 * snapshot and runs the guest.  -1 with err if it could not. */
static int wait_restored(qmp *q, fb_err *err)
{
    uint64_t deadline = fb_now_ns() + 60ull * 1000000000u;
    json_t *greeting = qmp_next(q, deadline, err);
    json_decref(greeting);
    if (!greeting || qmp_ok(q, "qmp_capabilities", NULL, -1, deadline, err) < 0)
        return -1;
    for (;;) {
        json_t *r = qmp_call(q, "query-status", NULL, -1, deadline, err);
        if (!r)
            return -1;
        const char *status = json_string_value(json_object_get(r, "status"));
        if (status && strcmp(status, "running") == 0) {
            json_decref(r);
            return 0;
        }
        if (!status || strcmp(status, "inmigrate") != 0) {
            fb_fail(err, "QEMU's state after loading it is \"%s\"", status ? status : "?");
            json_decref(r);
            return -1;
        }
        json_decref(r);
        struct timespec d = {.tv_sec = 0, .tv_nsec = 2 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

/* Jails and starts QEMU with argv; fds 5 and 6 of QEMU are extra[0..1]. */
static int launch(fb_sandbox *sb, char *const *argv, int extra0, int extra1, bool restoring,
                  fb_err *err)
{
    int chan[2], con[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, chan) < 0)
        return fb_fail_errno(err, "socketpair");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, con) < 0) {
        close(chan[0]);
        close(chan[1]);
        return fb_fail_errno(err, "socketpair");
    }
    vm_args va = {.sb = sb, .chan = chan[1], .console = con[1], .extra = {extra0, extra1},
                  .stub_kernel = restoring, .stub_capstone = fb_qemu_stub_capstone(QEMU_BIN), .argv = argv};
    fb_spawn sp = {
        .clone_flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET,
        .cg = &sb->cg,
        .child = vm_child,
        .arg = &va,
    };
    pid_t pid = fb_confine_spawn(&sp, err);
    close(chan[1]);
    close(con[1]);
    if (pid < 0) {
        close(chan[0]);
        close(con[0]);
        return -1;
    }
    sb->pid = pid;
    sb->chan_fd = chan[0];
    sb->console_fd = con[0];
    fb_set_nonblock(sb->console_fd, true);
    return 0;
}

/* Ends a QEMU that vm_start gives up on, before anyone else knew it. */
static void unlaunch(fb_sandbox *sb)
{
    kill(sb->pid, SIGKILL);
    while (waitpid(sb->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    close(sb->chan_fd);
    close(sb->console_fd);
    sb->pid = -1;
    sb->chan_fd = sb->console_fd = -1;
    sb->console_len = 0;
}

static int vm_start(fb_sandbox *sb, fb_err *err)
{
    char root[4200];
    snprintf(root, sizeof root, "%s/root", sb->run_path);
    if (mkdir(root, 0755) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", root);
    if (access(QEMU_BIN, X_OK) != 0)
        return fb_fail(err, "%s not found: install qemu-system-x86 (scripts/install-deps.sh)", QEMU_BIN);

    char name[64], mem[32], smp[32], accel[64], append[256];
    snprintf(name, sizeof name, "forgebox-%s", sb->id);
    snprintf(mem, sizeof mem, "%llu", (unsigned long long)sb->cfg.memory_mib);
    snprintf(smp, sizeof smp, "%llu", (unsigned long long)sb->cfg.vcpus);
    bool kvm = sb->accel == FB_ACCEL_KVM;
    /* quiet boot; no crypto self-tests (0.3 s under TCG); panic and
     * reboot end QEMU (-no-reboot).  init_on_free=1: the guest zeroes the
     * pages it frees, so what the boot used and dropped (the compressed
     * kernel, the initramfs, init sections) is zero when the snapshot is
     * saved; zero pages are not in the stream and never become resident in
     * a restored VM (90 -> 54 MiB of a 128 MiB guest resident, a 92 -> 55
     * MB snapshot; bench/README.md), and no freed data lingers in the
     * guest for a later command to find. */
    int n = snprintf(append, sizeof append,
                     "console=ttyS0 loglevel=0 edd=off cryptomgr.notests panic=-1 reboot=t "
                     "init_on_free=1");
    if (kvm) {
        snprintf(accel, sizeof accel, "kvm");
    } else {
        snprintf(accel, sizeof accel, "tcg,tb-size=%llu", (unsigned long long)sb->cfg.tcg_cache_mib);
        /* norandmaps: under TCG no address-space randomisation for the
         * guest's processes.  QEMU 7.2 finds translated code by its virtual
         * address, so every new process, whose ld.so, libc and program sit
         * at new random addresses, had all its code translated again:
         * ~1 MiB of translation cache per exec of /bin/true, the 20 MiB
         * cache full after a handful of execs and then flushed every few,
         * each flush retranslating the kernel's and fb-agent's working set
         * (4x the QEMU CPU time per exec; bench/README.md, session 6).
         * Without it a program's code is translated once per VM.  What it
         * gives up is docs/security-model.md's: the guest's processes all
         * run the sandbox's own untrusted code as uid 1000; fb-agent's
         * layout was already the snapshot's in every VM.  Under KVM there
         * is no translation and the guest keeps ASLR. */
        n += snprintf(append + n, sizeof append - (size_t)n, " norandmaps");
        uint64_t khz = host_tsc_khz(sb->cfg.run_dir);
        if (khz)
            snprintf(append + n, sizeof append - (size_t)n, " tsc_early_khz=%llu",
                     (unsigned long long)khz);
    }
    char *argv[64] = {
        "qemu-system-x86_64", "-name", name,
        /* ACPI finds the virtio-mmio devices and powers off; the RTC saves
         * the kernel a second of probing and gives the guest a clock.
         * mem-merge=off: guest RAM is never offered to KSM, even on a host
         * that runs it: merging pages across sandboxes of different users
         * opens a timing side channel between them (a write to a merged
         * page is slow) and lets Rowhammer flip a page another VM
         * shares (Flip Feng Shui). */
        "-machine", "microvm,x-option-roms=off,rtc=on,isa-serial=on,acpi=on,pcie=off,mem-merge=off",
        "-accel", accel,
        "-cpu", kvm ? "host" : "max",
        "-m", mem, "-smp", smp,
        "-nodefaults", "-no-user-config", "-no-reboot",
        "-display", "none", "-monitor", "none",
        "-kernel", "/image/vmlinuz", "-initrd", "/image/initrd.img",
        "-append", append,
        "-drive", "id=root,file=/image/rootfs.ext4,format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=root",
        "-device", "virtio-serial-device,max_ports=2",
        "-chardev", "socket,id=agent,fd=3",
        "-device", "virtserialport,id=agentport,chardev=agent,name=forgebox.agent",
        "-chardev", "socket,id=console,fd=4",
        "-serial", "chardev:console",
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        NULL,
    };
    int base = 0;
    while (argv[base])
        base++;

    /* From a snapshot, or making one, or neither (snapshot.h). */
    char shape[4096];
    bool snapshots = false;
    if (!sb->cfg.no_vm_snapshot) {
        fb_err serr = {{0}};
        if (vm_shape(sb, argv, shape, sizeof shape, &serr) < 0)
            fprintf(stderr, "forgebox: VM snapshots: %s\n", serr.msg);
        else
            snapshots = true;
    }
    for (int attempt = 0;; attempt++) {
        fb_snap snap = {.fd = -1, .lock_fd = -1};
        if (snapshots)
            fb_snap_prepare(sb->cfg.state_dir, shape, &snap);
        int argc = base, qmp_sv[2] = {-1, -1};
        if (snap.mode != FB_SNAP_NONE &&
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, qmp_sv) < 0) {
            fprintf(stderr, "forgebox: VM snapshots: socketpair: %s\n", strerror(errno));
            fb_snap_close(&snap);
        }
        int extra0 = -1, extra1 = -1;
        if (snap.mode == FB_SNAP_RESTORE) {
            static char *const more[] = {
                "-incoming", "fd:5", "-chardev", "socket,id=qmp,fd=6", "-mon", "chardev=qmp,mode=control",
                NULL,
            };
            for (char *const *m = more; *m; m++)
                argv[argc++] = *m;
            extra0 = snap.fd;
            extra1 = qmp_sv[1];
            fb_trace("create: restoring from a snapshot");
        } else if (snap.mode == FB_SNAP_MAKE) {
            static char *const more[] = {
                "-chardev", "socket,id=qmp,fd=5", "-mon", "chardev=qmp,mode=control", "-S",
                /* A restored VM runs at once although its source was
                 * stopped while saved. */
                "-global", "migration.store-global-state=off", NULL,
            };
            for (char *const *m = more; *m; m++)
                argv[argc++] = *m;
            extra0 = qmp_sv[1];
        }
        argv[argc] = NULL;
        int rc = launch(sb, argv, extra0, extra1, snap.mode == FB_SNAP_RESTORE, err);
        if (qmp_sv[1] >= 0)
            close(qmp_sv[1]);
        if (rc < 0) {
            if (qmp_sv[0] >= 0)
                close(qmp_sv[0]);
            fb_snap_close(&snap);
            return -1;
        }
        qmp q = {.fd = qmp_sv[0]};
        fb_err serr = {{0}};
        if (snap.mode == FB_SNAP_RESTORE) {
            rc = wait_restored(&q, &serr);
            close(qmp_sv[0]);
            if (rc == 0) {
                fb_trace("create: restored");
                fb_snap_close(&snap);
                return 0;
            }
            /* Verified, yet QEMU would not take it (or the VM ended on
             * the way): never again; this VM boots cold and makes a new
             * one. */
            fb_sup_console_hint(sb, &serr);
            fprintf(stderr, "forgebox: VM snapshot %s/%s.snap could not be restored: %s; this VM "
                            "boots cold and makes it again\n", snap.dir, snap.key, serr.msg);
            unlaunch(sb);
            fb_snap_discard(&snap);
            if (attempt > 0)
                return fb_fail(err, "VM snapshots: restoring failed twice");
            continue;
        }
        if (snap.mode == FB_SNAP_MAKE) {
            if (save_snapshot(&q, snap.fd, &serr) < 0 || fb_snap_commit(&snap, &serr) < 0)
                fprintf(stderr, "forgebox: VM snapshot not made (the VM boots on cold): %s\n", serr.msg);
            close(qmp_sv[0]);
        }
        fb_snap_close(&snap);
        return 0;
    }
}

static uint64_t vm_cgroup_memory(const fb_sandbox *sb)
{
    uint64_t extra = sb->accel == FB_ACCEL_KVM
                         ? VM_OVERHEAD_KVM_MIB
                         : VM_OVERHEAD_TCG_MIB - FB_DEFAULT_TCG_CACHE_MIB + sb->cfg.tcg_cache_mib;
    return (sb->cfg.memory_mib + extra) * 1024 * 1024;
}

static uint64_t vm_cgroup_pids(const fb_sandbox *sb)
{
    /* QEMU's main loop, vCPU, RCU and I/O worker threads. */
    return 64 + sb->cfg.vcpus;
}

const struct fb_backend_ops fb_backend_vm = {
    .name = "vm",
    .image_needs = FB_IMAGE_NEEDS_VM,
    .cgroup_memory = vm_cgroup_memory,
    .cgroup_pids = vm_cgroup_pids,
    .start = vm_start,
};

/*
 * sandbox.c - the sandbox manager: configuration, uid slots, orphans, and
 * the life of a sandbox from boot to destroy (sandbox.h).
 *
 * Boot order: validate the config, verify the image, take a uid slot (a
 * lock file held for the sandbox's life, so concurrent managers never share
 * uids), create the cgroup, let the backend spawn, take a pidfd of its
 * process, then the supervisor's handshake and I/O thread (supervisor.c).
 * Destruction runs the same list backwards and is idempotent, so a failure
 * at any step unwinds exactly what was done.  Boot leaves a sandbox ready
 * but unassigned (a pool may hold it); assign hands it out, once.
 *
 * Kill and destroy never wait for anyone's exec: they record the end
 * (FB_E_KILLED), which releases every waiter, and signal the process
 * through its pidfd, so a recycled pid can never be hit.
 */
#define _GNU_SOURCE
#include "sandbox/sandbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "image/image.h"
#include "proto/relay.h"
#include "sandbox/supervisor.h"


void fb_sandbox_config_defaults(fb_sandbox_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->backend = FB_BACKEND_VM;
    cfg->accel = FB_ACCEL_AUTO;
    cfg->memory_mib = 512;
    cfg->vcpus = 1;
    cfg->disk_mib = 256;
    cfg->tmp_mib = 64;
    cfg->pids = 256;
    cfg->max_output = 8u * 1024 * 1024;
    cfg->tcg_cache_mib = FB_DEFAULT_TCG_CACHE_MIB;
    cfg->run_dir = "/run/forgebox";
    cfg->state_dir = "/var/lib/forgebox";
}

const char *fb_backend_name(fb_backend_kind kind)
{
    return kind == FB_BACKEND_JAIL ? "jail" : "vm";
}

const char *fb_sandbox_id(const fb_sandbox *sb)
{
    return sb->id;
}

int fb_sandbox_pid(const fb_sandbox *sb)
{
    return (int)sb->pid;
}

const char *fb_sandbox_isolation(const fb_sandbox *sb)
{
    if (sb->remote_isolation[0])
        return sb->remote_isolation;
    if (!sb->ops)
        return "none";
    if (sb->ops == &fb_backend_jail)
        return "namespaces";
    return sb->accel == FB_ACCEL_KVM ? "kvm" : "tcg";
}

static int validate_config(const fb_sandbox_config *c, fb_err *err)
{
    uint64_t min_mem = c->backend == FB_BACKEND_VM ? FB_MIN_VM_MEMORY_MIB : FB_MIN_MEMORY_MIB;
    if (c->memory_mib < min_mem || c->memory_mib > FB_MAX_MEMORY_MIB)
        return fb_fail(err, "memory must be between %llu and %d MiB", (unsigned long long)min_mem,
                       FB_MAX_MEMORY_MIB);
    if (c->vcpus < 1 || c->vcpus > FB_MAX_VCPUS)
        return fb_fail(err, "vcpus must be between 1 and %d", FB_MAX_VCPUS);
    if (c->disk_mib < 1 || c->disk_mib > FB_MAX_DISK_MIB)
        return fb_fail(err, "disk must be between 1 and %d MiB", FB_MAX_DISK_MIB);
    if (c->tmp_mib < 1 || c->tmp_mib > FB_MAX_DISK_MIB)
        return fb_fail(err, "tmp must be between 1 and %d MiB", FB_MAX_DISK_MIB);
    if (c->pids < FB_MIN_PIDS || c->pids > FB_MAX_PIDS)
        return fb_fail(err, "pids must be between %d and %d", FB_MIN_PIDS, FB_MAX_PIDS);
    if (c->tcg_cache_mib < FB_MIN_TCG_CACHE_MIB || c->tcg_cache_mib > FB_MAX_TCG_CACHE_MIB)
        return fb_fail(err, "the TCG translation cache must be between %d and %d MiB", FB_MIN_TCG_CACHE_MIB,
                       FB_MAX_TCG_CACHE_MIB);
    if (!c->image_dir || !c->run_dir)
        return fb_fail(err, "internal: image_dir and run_dir are required");
    if (strlen(c->image_dir) > 3000 || strlen(c->run_dir) > 3000)
        return fb_fail(err, "image or runtime directory path too long");
    return 0;
}

/* ---- uid slots ------------------------------------------------------------ */

static int slot_acquire(fb_sandbox *sb, fb_err *err)
{
    /* The run dir must be traversable by a jail's unprivileged root (it
     * bind-mounts its root from there); the slot locks are ours alone. */
    if (fb_mkdir_p(sb->cfg.run_dir, 0755, err) < 0)
        return -1;
    if (mkdir(FB_SLOT_DIR, 0700) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", FB_SLOT_DIR);
    /* Start at a random slot so concurrent creators rarely collide. */
    uint32_t start;
    fb_random_bytes(&start, sizeof start);
    for (int i = 0; i < FB_MAX_SLOTS; i++) {
        int slot = (int)((start + (uint32_t)i) % FB_MAX_SLOTS);
        char path[256];
        snprintf(path, sizeof path, "%s/%d.lock", FB_SLOT_DIR, slot);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
            return fb_fail_errno(err, "cannot open %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
            /* Name the holder, so that orphan reaping can tell a slot
             * reused by a live sandbox from one still held by the dead.
             * Overwritten in place: ids have one length, so a used lock
             * file already has it and needs no truncation (truncating
             * frees and reallocates its block: 0.3-0.6 ms on an ext4
             * /run, the largest single step before the cgroup). */
            size_t idlen = strlen(sb->id);
            struct stat st;
            if (pwrite(fd, sb->id, idlen, 0) != (ssize_t)idlen || fstat(fd, &st) < 0 ||
                (st.st_size != (off_t)idlen && ftruncate(fd, (off_t)idlen) < 0)) {
                fb_fail_errno(err, "cannot write %s", path);
                close(fd);
                return -1;
            }
            sb->slot = slot;
            sb->slot_fd = fd;
            sb->uid_base = FB_UID_BASE + (uid_t)slot * FB_UID_RANGE;
            return 0;
        }
        close(fd);
    }
    return fb_fail(err, "all %d sandbox slots are in use on this host", FB_MAX_SLOTS);
}

/* ---- orphans --------------------------------------------------------------- */

/* Whether the manager of sandbox `id`, which took `slot`, is gone: its slot
 * lock can be taken now, or a live holder that is someone else took it. */
static bool slot_abandoned(uint64_t slot, const char *id)
{
    char path[256], holder[64] = "";
    snprintf(path, sizeof path, "%s/%llu.lock", FB_SLOT_DIR, (unsigned long long)slot);
    cleanup_fd int lfd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (lfd < 0)
        return errno == ENOENT;
    if (flock(lfd, LOCK_EX | LOCK_NB) == 0)
        return true; /* the lock goes with lfd */
    ssize_t n = pread(lfd, holder, sizeof holder - 1, 0);
    if (n <= 0)
        return false; /* being taken right now: look again next time */
    holder[n] = '\0';
    return strcmp(holder, id) != 0;
}

/* A sandbox whose manager died (kill -9 mid-way) leaves its runtime dir and
 * maybe its cgroup.  Its slot's lock died with the manager, so a runtime
 * dir whose slot is free or held by another sandbox belongs to nobody:
 * clean it up. */
void fb_sandbox_reap_orphans(const char *run_dir)
{
    DIR *d = opendir(run_dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "sb-", 3) != 0 || strlen(de->d_name) > 40)
            continue;
        char path[4300], buf[16];
        /* A jail's record is a file holding its slot; other sandboxes
         * have a directory with a `slot` file. */
        snprintf(path, sizeof path, "%s/%s", run_dir, de->d_name);
        struct stat st;
        if (lstat(path, &st) < 0 || (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)))
            continue;
        if (S_ISDIR(st.st_mode))
            snprintf(path, sizeof path, "%s/%s/slot", run_dir, de->d_name);
        uint64_t slot;
        if (fb_read_file(path, buf, sizeof buf, NULL) < 0 ||
            fb_parse_u64(buf, 0, FB_MAX_SLOTS - 1, &slot) < 0)
            continue; /* being created right now, or not ours */
        if (!slot_abandoned(slot, de->d_name))
            continue;
        fb_cgroup cg;
        fb_cgroup_open_existing(&cg, de->d_name);
        if (fb_cgroup_destroy(&cg) == 0) {
            snprintf(path, sizeof path, "%s/%s", run_dir, de->d_name);
            char root[4400];
            snprintf(root, sizeof root, "%s/root", path);
            umount2(root, MNT_DETACH);
            rmdir(root);
            fb_rm_rf(path);
            fprintf(stderr, "forgebox: cleaned up orphaned sandbox %s\n", de->d_name);
        }
    }
    closedir(d);
}

/* ---- lifecycle ------------------------------------------------------------ */

/* Errors before the backend ran are configuration or host problems. */
static fb_errc boot_fail(fb_sandbox *sb, fb_errc code)
{
    fb_sandbox_destroy(sb);
    return code;
}

fb_errc fb_sandbox_boot_here(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    *out = NULL;
    if (validate_config(cfg, err) < 0)
        return FB_E_BAD_REQUEST;
    if (geteuid() != 0) {
        fb_fail(err, "creating sandboxes needs root (namespaces, cgroups, uid slots)");
        return FB_E_PERMISSION_DENIED;
    }
    fb_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        fb_fail(err, "out of memory");
        return FB_E_NOMEM;
    }
    sb->cfg = *cfg;
    sb->slot = -1;
    sb->slot_fd = sb->chan_fd = sb->console_fd = sb->pidfd = sb->wake_fd = sb->net_fd = -1;
    sb->netns.net_fd = sb->netns.ipc_fd = -1; /* none made ahead until fb_netns_begin */
    sb->pid = -1;
    sb->ops = cfg->backend == FB_BACKEND_JAIL ? &fb_backend_jail : &fb_backend_vm;
    if (fb_sup_init(sb, err) < 0)
        return boot_fail(sb, FB_E_RESOURCE);
    if (!realpath(cfg->image_dir, sb->image_dir)) {
        fb_fail_errno(err, "guest image directory %s", cfg->image_dir);
        return boot_fail(sb, FB_E_NOT_FOUND);
    }
    sb->cfg.image_dir = sb->image_dir;
    uint8_t rnd[8];
    fb_random_bytes(rnd, sizeof rnd);
    char hex[17];
    fb_hex(rnd, sizeof rnd, hex);
    snprintf(sb->id, sizeof sb->id, "sb-%s", hex);

    if (sb->ops == &fb_backend_vm) {
        char why[256];
        fb_accel detected = fb_vm_detect_accel(why, sizeof why);
        sb->accel = cfg->accel == FB_ACCEL_AUTO ? detected : cfg->accel;
        if (sb->accel == FB_ACCEL_KVM && detected != FB_ACCEL_KVM) {
            fb_fail(err, "KVM was requested but this host cannot use it (%s)", why);
            return boot_fail(sb, FB_E_BAD_REQUEST);
        }
    }

    fb_trace("create: config checked");
    if (sb->ops->begin)
        sb->ops->begin(sb);
    if (fb_image_verify(sb->image_dir, cfg->state_dir, sb->ops->image_needs, err) < 0)
        return boot_fail(sb, FB_E_SETUP_FAILED);
    fb_trace("create: image verified");
    fb_sandbox_reap_orphans(cfg->run_dir);
    if (slot_acquire(sb, err) < 0)
        return boot_fail(sb, FB_E_RESOURCE);
    snprintf(sb->run_path, sizeof sb->run_path, "%s/%s", cfg->run_dir, sb->id);
    /* The sandbox's record for orphan reaping (its slot number): a
     * directory holding `slot`, or for a backend that keeps nothing on
     * the host (the jail) a file of that name.  A file costs no block of
     * its own on a disk-backed /run: freeing a directory's block is a
     * synchronous discard there (ext4 -o discard without a journal). */
    char slotfile[4200], slotnum[16];
    if (sb->ops->run_record_file) {
        snprintf(slotfile, sizeof slotfile, "%s", sb->run_path);
    } else {
        if (fb_mkdir_p(sb->run_path, 0755, err) < 0)
            return boot_fail(sb, FB_E_IO_ERROR);
        snprintf(slotfile, sizeof slotfile, "%s/slot", sb->run_path);
    }
    snprintf(slotnum, sizeof slotnum, "%d", sb->slot);
    int sfd = open(slotfile, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (sfd < 0 || fb_write_all(sfd, slotnum, strlen(slotnum)) < 0) {
        fb_fail_errno(err, "cannot write %s", slotfile);
        if (sfd >= 0) {
            close(sfd);
            /* Ours (O_EXCL): the unwinding removes it. */
        } else if (sb->ops->run_record_file) {
            sb->run_path[0] = '\0'; /* not ours: leave it alone */
        }
        return boot_fail(sb, FB_E_IO_ERROR);
    }
    close(sfd);
    fb_cgroup_limits lim = {
        .memory_bytes = sb->ops->cgroup_memory(sb),
        .pids = sb->ops->cgroup_pids(sb),
        .cpu_millis = cfg->vcpus * 1000,
    };
    fb_trace("create: slot taken");
    if (fb_cgroup_create(&sb->cg, sb->id, &lim, err) < 0)
        return boot_fail(sb, FB_E_SETUP_FAILED);
    fb_trace("create: cgroup made");
    if (sb->ops->start(sb, err) < 0)
        return boot_fail(sb, FB_E_SETUP_FAILED);
    sb->pidfd = (int)syscall(SYS_pidfd_open, sb->pid, 0);
    if (sb->pidfd < 0) {
        fb_fail_errno(err, "pidfd_open");
        return boot_fail(sb, FB_E_RESOURCE);
    }
    fb_trace("create: backend started");
    fb_errc code = fb_sup_start(sb, err);
    if (code != FB_OK) {
        fb_fail_prefix(err, "sandbox did not start");
        return boot_fail(sb, code);
    }
    fb_trace("create: agent ready");
    *out = sb;
    return FB_OK;
}

fb_errc fb_sandbox_assign(fb_sandbox *sb, fb_err *err)
{
    fb_errc code = FB_OK;
    pthread_mutex_lock(&sb->mu);
    if (sb->dead) {
        code = sb->dead;
        fb_fail(err, "sandbox %s is no longer usable: %s", sb->id, sb->dead_msg);
    } else if (sb->assigned) {
        code = FB_E_STATE;
        fb_fail(err, "sandbox %s is assigned already", sb->id);
    } else {
        sb->assigned = true;
    }
    pthread_mutex_unlock(&sb->mu);
    return code;
}

int fb_sandbox_create(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    if (fb_sandbox_boot(cfg, out, err) != FB_OK)
        return -1;
    if (fb_sandbox_assign(*out, err) != FB_OK) {
        fb_sandbox_destroy(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int fb_sandbox_create_here(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    if (fb_sandbox_boot_here(cfg, out, err) != FB_OK)
        return -1;
    if (fb_sandbox_assign(*out, err) != FB_OK) {
        fb_sandbox_destroy(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

fb_errc fb_sandbox_state(fb_sandbox *sb)
{
    pthread_mutex_lock(&sb->mu);
    fb_errc code = sb->dead;
    pthread_mutex_unlock(&sb->mu);
    return code;
}

void fb_sandbox_kill(fb_sandbox *sb)
{
    pthread_mutex_lock(&sb->mu);
    fb_sup_die_locked(sb, FB_E_KILLED, "sandbox %s was killed", sb->id);
    if (sb->pidfd >= 0)
        (void)syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
    pthread_mutex_unlock(&sb->mu);
}

/* Waits up to timeout_ms for the sandbox's process to exit, without reaping it. */
static void wait_exit(int pidfd, int timeout_ms)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR)
        ;
}

/* Asks the agent to kill its commands and power off; true if it agreed. */
static bool ask_shutdown(fb_sandbox *sb)
{
    fb_request rq;
    memset(&rq, 0, sizeof rq);
    fb_err err;
    pthread_mutex_lock(&sb->mu);
    fb_errc code = fb_sup_begin_locked(sb, false, &rq.id, &err);
    pthread_mutex_unlock(&sb->mu);
    if (code != FB_OK)
        return false;
    code = fb_sup_request(sb, &rq, fb_msg_encode_simple(FB_MSG_SHUTDOWN, rq.id, &err), NULL, 0, 2000,
                          &err);
    fb_frame_clear(&rq.reply);
    return code == FB_OK;
}

void fb_sandbox_destroy(fb_sandbox *sb)
{
    if (!sb)
        return;
    bool supervised = sb->wake_fd >= 0;
    /* A backend whose process is the sandbox's pid 1 (the jail) is
     * stopped by SIGKILL: the kernel then kills every process of its pid
     * namespace before the init is reaped, which is all the agent's
     * shutdown would do, without waiting for a round trip. */
    bool kill_stops = sb->ops && sb->ops->kill_stops && sb->pid > 0 && sb->pidfd >= 0;
    bool clean = !kill_stops && sb->io_started && ask_shutdown(sb);
    fb_trace("destroy: shutdown answered");
    if (supervised) {
        /* Whoever still reads an exec gets FB_E_KILLED now, not later. */
        pthread_mutex_lock(&sb->mu);
        sb->stopping = true;
        fb_sup_die_locked(sb, FB_E_KILLED, "sandbox %s was destroyed", sb->id);
        /* The kill first: the jail's end (its namespaces and mounts torn
         * down) runs while the I/O thread is joined. */
        if (kill_stops)
            (void)syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
        pthread_mutex_unlock(&sb->mu);
        fb_sup_stop(sb);
    } else if (kill_stops) {
        (void)syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
    }
    if (sb->pid > 0) {
        /* A VM powering off or a jail's init exiting ends by itself within
         * moments; a broken sandbox gets no grace.  Then make sure. */
        if (clean && sb->pidfd >= 0)
            wait_exit(sb->pidfd, 3000);
        if (waitpid(sb->pid, NULL, WNOHANG) != sb->pid) {
            if (sb->pidfd >= 0)
                (void)syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
            else
                kill(sb->pid, SIGKILL);
            while (waitpid(sb->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
    }
    fb_trace("destroy: process reaped");
    fb_netns_abandon(&sb->netns);
    bool cgroup_left = fb_cgroup_destroy(&sb->cg) < 0;
    fb_trace("destroy: cgroup removed");
    if (sb->chan_fd >= 0)
        close(sb->chan_fd);
    if (sb->console_fd >= 0)
        close(sb->console_fd);
    if (sb->net_fd >= 0)
        close(sb->net_fd);
    if (sb->relay)
        fb_relay_close_all(sb->relay);
    if (sb->pidfd >= 0)
        close(sb->pidfd);
    if (sb->run_path[0] && sb->ops && sb->ops->run_record_file) {
        unlink(sb->run_path);
    } else if (sb->run_path[0]) {
        char root[4200];
        snprintf(root, sizeof root, "%s/root", sb->run_path);
        rmdir(root);
        fb_rm_rf(sb->run_path);
    }
    /* Closing releases the flock and frees the slot's uids for the next
     * sandbox - unless something of this one is still alive: then the
     * slot stays taken for the life of this process. */
    if (sb->slot_fd >= 0 && !cgroup_left)
        close(sb->slot_fd);
    fb_trace("destroy: done");
    if (!supervised) {
        free(sb);
        return;
    }
    /* The memory stays until the last exec handle goes. */
    pthread_mutex_lock(&sb->mu);
    sb->chan_fd = sb->console_fd = sb->pidfd = sb->net_fd = -1;
    sb->pid = -1;
    fb_sup_unref_unlock(sb);
}

/* ---- host capabilities ---------------------------------------------------- */

void fb_host_probe(fb_host_caps *caps)
{
    memset(caps, 0, sizeof *caps);
    caps->kvm_usable = fb_vm_detect_accel(caps->kvm_reason, sizeof caps->kvm_reason) == FB_ACCEL_KVM;
    caps->cgroup_version = (int)fb_cgroup_detect(caps->cgroup_desc, sizeof caps->cgroup_desc);
    caps->qemu_found = access("/usr/bin/qemu-system-x86_64", X_OK) == 0;
    char buf[256];
    if (fb_read_file("/proc/sys/user/max_user_namespaces", buf, sizeof buf, NULL) == 0 && atoi(buf) > 0) {
        caps->userns = true;
        snprintf(caps->userns_desc, sizeof caps->userns_desc, "user namespaces available (max %d)",
                 atoi(buf));
    } else {
        snprintf(caps->userns_desc, sizeof caps->userns_desc, "user namespaces disabled");
    }
}

/*
 * sandbox.c - the sandbox manager: lifecycle and the host side of the agent
 * protocol (sandbox.h).
 *
 * Creation order: validate the config, verify the image, take a uid slot
 * (a lock file held for the sandbox's life, so concurrent managers never
 * share uids), create the cgroup, let the backend spawn, then the hello
 * handshake.  Destruction runs the same list backwards and is idempotent,
 * so a failure at any step unwinds exactly what was done.
 *
 * Every frame from the agent is checked like input from a stranger: an
 * unexpected type, a malformed frame or a lost channel marks the sandbox
 * broken and ends it; the caller gets a clear error, never a crash.
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
#include "sandbox/backend.h"

#define HELLO_TIMEOUT_VM_MS 120000
#define HELLO_TIMEOUT_JAIL_MS 15000
#define REQUEST_TIMEOUT_MS 30000
#define EXEC_SLACK_MS 15000
#define FILE_CHUNK (256u * 1024u)

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
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/slots", sb->cfg.run_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return fb_fail_errno(err, "cannot create %s", dir);
    /* Start at a random slot so concurrent creators rarely collide. */
    uint32_t start;
    fb_random_bytes(&start, sizeof start);
    for (int i = 0; i < FB_MAX_SLOTS; i++) {
        int slot = (int)((start + (uint32_t)i) % FB_MAX_SLOTS);
        char path[4300];
        snprintf(path, sizeof path, "%s/%d.lock", dir, slot);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0)
            return fb_fail_errno(err, "cannot open %s", path);
        if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
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

/* A sandbox whose manager died (kill -9 mid-way) leaves its runtime dir and
 * maybe its cgroup.  Its slot's lock died with the manager, so a runtime
 * dir whose slot can be locked right now belongs to nobody: clean it up. */
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
        snprintf(path, sizeof path, "%s/%s/slot", run_dir, de->d_name);
        uint64_t slot;
        if (fb_read_file(path, buf, sizeof buf, NULL) < 0 ||
            fb_parse_u64(buf, 0, FB_MAX_SLOTS - 1, &slot) < 0)
            continue; /* being created right now, or not ours */
        snprintf(path, sizeof path, "%s/slots/%llu.lock", run_dir, (unsigned long long)slot);
        int lfd = open(path, O_RDWR | O_CLOEXEC);
        if (lfd < 0)
            continue;
        if (flock(lfd, LOCK_EX | LOCK_NB) == 0) {
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
        close(lfd);
    }
    closedir(d);
}

/* ---- console ring ---------------------------------------------------------- */

static void drain_console(fb_sandbox *sb)
{
    if (sb->console_fd < 0)
        return;
    char buf[4096];
    for (;;) {
        ssize_t n = read(sb->console_fd, buf, sizeof buf);
        if (n <= 0) {
            if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                close(sb->console_fd);
                sb->console_fd = -1;
            }
            if (n < 0 && errno == EINTR)
                continue;
            return;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (sb->console_len == sizeof sb->console) {
                memmove(sb->console, sb->console + 1024, sizeof sb->console - 1024);
                sb->console_len -= 1024;
            }
            sb->console[sb->console_len++] = buf[i];
        }
    }
}

/* Appends the last console line(s) to an error, for a failed VM. */
static void add_console_hint(fb_sandbox *sb, fb_err *err)
{
    drain_console(sb);
    if (!err || sb->console_len == 0)
        return;
    char tail[300];
    size_t n = sb->console_len < sizeof tail - 1 ? sb->console_len : sizeof tail - 1;
    memcpy(tail, sb->console + sb->console_len - n, n);
    tail[n] = '\0';
    for (char *c = tail; *c; c++)
        if (*c == '\n' || *c == '\r' || (unsigned char)*c < 0x20)
            *c = ' ';
    size_t len = strlen(err->msg);
    snprintf(err->msg + len, sizeof err->msg - len, " (guest console: ...%s)", tail);
}

/* ---- channel helpers ------------------------------------------------------ */

static int send_frame(fb_sandbox *sb, json_t *hdr, const void *payload, size_t len, fb_err *err)
{
    int rc = fb_chan_send(&sb->chan, hdr, payload, len, err);
    json_decref(hdr);
    if (rc == 0)
        rc = fb_chan_flush(&sb->chan, err);
    if (rc < 0)
        sb->broken = true;
    return rc;
}

/* Waits for the reply to request id, dropping unrelated frames. */
static int wait_reply(fb_sandbox *sb, uint64_t id, fb_frame *out, int timeout_ms, fb_err *err)
{
    uint64_t deadline = fb_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        uint64_t now = fb_now_ns();
        if (now >= deadline) {
            sb->broken = true;
            return fb_fail(err, "sandbox %s did not answer within %d ms", sb->id, timeout_ms);
        }
        int left = (int)((deadline - now) / 1000000ull) + 1;
        if (fb_chan_recv(&sb->chan, out, left, err) < 0) {
            sb->broken = true;
            add_console_hint(sb, err);
            return -1;
        }
        drain_console(sb);
        if (strcmp(out->type, "fatal") == 0) {
            const char *m = json_string_value(json_object_get(out->hdr, "message"));
            fb_fail(err, "sandbox agent failed: %s", m ? m : "(no message)");
            fb_frame_clear(out);
            sb->broken = true;
            return -1;
        }
        if (out->id == id && (strcmp(out->type, "ok") == 0 || strcmp(out->type, "error") == 0 ||
                              strcmp(out->type, "ready") == 0))
            return 0;
        fb_frame_clear(out);
    }
}

static int reply_error(const fb_frame *f, fb_err *err)
{
    const char *code = json_string_value(json_object_get(f->hdr, "code"));
    const char *msg = json_string_value(json_object_get(f->hdr, "message"));
    return fb_fail(err, "%s (%s)", msg ? msg : "request failed", code ? code : "error");
}

/* ---- lifecycle ------------------------------------------------------------ */

static int handshake(fb_sandbox *sb, fb_err *err)
{
    uint64_t id = sb->next_id++;
    json_t *h = fb_hdr_new("hello", id);
    json_object_set_new(h, "version", json_integer(FB_PROTO_VERSION));
    json_object_set_new(h, "workspace_mib", json_integer((json_int_t)sb->cfg.disk_mib));
    json_object_set_new(h, "tmp_mib", json_integer((json_int_t)sb->cfg.tmp_mib));
    json_object_set_new(h, "nproc", json_integer((json_int_t)sb->cfg.pids));
    json_object_set_new(h, "nofile", json_integer(1024));
    json_object_set_new(h, "max_output", json_integer((json_int_t)sb->cfg.max_output));
    if (send_frame(sb, h, NULL, 0, err) < 0)
        return -1;
    fb_frame f;
    int timeout = sb->ops == &fb_backend_vm ? HELLO_TIMEOUT_VM_MS : HELLO_TIMEOUT_JAIL_MS;
    if (wait_reply(sb, id, &f, timeout, err) < 0)
        return fb_fail_prefix(err, "sandbox did not start");
    int rc = 0;
    if (strcmp(f.type, "ready") != 0)
        rc = reply_error(&f, err);
    else
        snprintf(sb->kernel, sizeof sb->kernel, "%s",
                 json_string_value(json_object_get(f.hdr, "kernel")) ?: "");
    fb_frame_clear(&f);
    return rc;
}

int fb_sandbox_create(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err)
{
    *out = NULL;
    if (validate_config(cfg, err) < 0)
        return -1;
    if (geteuid() != 0)
        return fb_fail(err, "creating sandboxes needs root (namespaces, cgroups, uid slots)");
    fb_sandbox *sb = calloc(1, sizeof *sb);
    if (!sb)
        return fb_fail(err, "out of memory");
    sb->cfg = *cfg;
    sb->slot = -1;
    sb->slot_fd = sb->chan_fd = sb->console_fd = -1;
    sb->pid = -1;
    sb->next_id = 1;
    sb->ops = cfg->backend == FB_BACKEND_JAIL ? &fb_backend_jail : &fb_backend_vm;
    if (!realpath(cfg->image_dir, sb->image_dir)) {
        fb_fail_errno(err, "guest image directory %s", cfg->image_dir);
        free(sb);
        return -1;
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
            goto fail;
        }
    }

    fb_trace("create: config checked");
    if (fb_image_verify(sb->image_dir, cfg->state_dir, sb->ops->image_needs, err) < 0)
        goto fail;
    fb_trace("create: image verified");
    fb_sandbox_reap_orphans(cfg->run_dir);
    if (slot_acquire(sb, err) < 0)
        goto fail;
    snprintf(sb->run_path, sizeof sb->run_path, "%s/%s", cfg->run_dir, sb->id);
    if (fb_mkdir_p(sb->run_path, 0755, err) < 0)
        goto fail;
    char slotfile[4200], slotnum[16];
    snprintf(slotfile, sizeof slotfile, "%s/slot", sb->run_path);
    snprintf(slotnum, sizeof slotnum, "%d", sb->slot);
    int sfd = open(slotfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (sfd < 0 || fb_write_all(sfd, slotnum, strlen(slotnum)) < 0) {
        fb_fail_errno(err, "cannot write %s", slotfile);
        if (sfd >= 0)
            close(sfd);
        goto fail;
    }
    close(sfd);
    fb_cgroup_limits lim = {
        .memory_bytes = sb->ops->cgroup_memory(sb),
        .pids = sb->ops->cgroup_pids(sb),
        .cpu_millis = cfg->vcpus * 1000,
    };
    fb_trace("create: slot taken");
    if (fb_cgroup_create(&sb->cg, sb->id, &lim, err) < 0)
        goto fail;
    fb_trace("create: cgroup made");
    if (sb->ops->start(sb, err) < 0)
        goto fail;
    fb_trace("create: backend started");
    fb_chan_init(&sb->chan, sb->chan_fd);
    fb_set_nonblock(sb->chan_fd, true);
    if (handshake(sb, err) < 0)
        goto fail;
    fb_trace("create: agent ready");
    *out = sb;
    return 0;
fail:
    fb_sandbox_destroy(sb);
    return -1;
}

/* Waits up to timeout_ms for pid to exit, without reaping it. */
static void wait_exit(pid_t pid, int timeout_ms)
{
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd < 0)
        return;
    struct pollfd p = {.fd = pfd, .events = POLLIN};
    while (poll(&p, 1, timeout_ms) < 0 && errno == EINTR)
        ;
    close(pfd);
}

void fb_sandbox_destroy(fb_sandbox *sb)
{
    if (!sb)
        return;
    if (sb->chan_fd >= 0 && !sb->broken) {
        /* Ask nicely first: the agent kills its commands and powers off. */
        fb_err err;
        uint64_t id = sb->next_id++;
        if (send_frame(sb, fb_hdr_new("shutdown", id), NULL, 0, &err) == 0) {
            fb_frame f;
            if (wait_reply(sb, id, &f, 2000, &err) == 0)
                fb_frame_clear(&f);
        }
    }
    fb_trace("destroy: shutdown answered");
    if (sb->pid > 0) {
        /* A VM powering off or a jail's init exiting ends by itself within
         * moments; a broken sandbox gets no grace.  Then make sure. */
        if (!sb->broken)
            wait_exit(sb->pid, 3000);
        if (waitpid(sb->pid, NULL, WNOHANG) != sb->pid) {
            kill(sb->pid, SIGKILL);
            while (waitpid(sb->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        }
        sb->pid = -1;
    }
    fb_trace("destroy: process reaped");
    bool cgroup_left = fb_cgroup_destroy(&sb->cg) < 0;
    fb_trace("destroy: cgroup removed");
    if (sb->chan_fd >= 0) {
        fb_chan_free(&sb->chan);
        close(sb->chan_fd);
    }
    if (sb->console_fd >= 0)
        close(sb->console_fd);
    if (sb->run_path[0]) {
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
    free(sb);
    fb_trace("destroy: done");
}

/* ---- exec ----------------------------------------------------------------- */

/* json_string() refuses invalid UTF-8; say so instead of sending less. */
static int add_string(json_t *arr_or_obj, const char *key, size_t keylen, const char *value,
                      const char *what, fb_err *err)
{
    json_t *s = json_string(value);
    if (!s)
        return fb_fail(err, "%s is not valid UTF-8", what);
    if (key)
        json_object_setn_new(arr_or_obj, key, keylen, s);
    else
        json_array_append_new(arr_or_obj, s);
    return 0;
}

static int exec_header(const fb_exec_req *req, uint64_t id, json_t **out, fb_err *err)
{
    if (!req->argv || !req->argv[0])
        return fb_fail(err, "no command given");
    json_t *h = fb_hdr_new("exec", id);
    json_t *argv = json_array();
    json_t *env = json_object();
    json_object_set_new(h, "argv", argv);
    json_object_set_new(h, "env", env);
    for (const char *const *a = req->argv; *a; a++)
        if (add_string(argv, NULL, 0, *a, "a command argument", err) < 0)
            goto fail;
    for (const char *const *e = req->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) {
            fb_fail(err, "environment entry \"%.64s\" is not KEY=VALUE", *e);
            goto fail;
        }
        if (add_string(env, *e, (size_t)(eq - *e), eq + 1, "an environment value", err) < 0)
            goto fail;
    }
    if (req->cwd && add_string(h, "cwd", 3, req->cwd, "the working directory", err) < 0)
        goto fail;
    json_object_set_new(h, "timeout_ms", json_integer((json_int_t)req->timeout_ms));
    if (req->max_output)
        json_object_set_new(h, "max_output", json_integer((json_int_t)req->max_output));
    json_object_set_new(h, "stdin", json_boolean(req->stdin_fd >= 0));
    *out = h;
    return 0;
fail:
    json_decref(h);
    return -1;
}

static void parse_exit(const fb_frame *f, fb_exec_result *res)
{
    json_t *code = json_object_get(f->hdr, "code");
    json_t *sig = json_object_get(f->hdr, "signal");
    res->exit_code = json_is_integer(code) ? (int)json_integer_value(code) : -1;
    res->signal = json_is_integer(sig) ? (int)json_integer_value(sig) : 0;
    res->timed_out = json_is_true(json_object_get(f->hdr, "timed_out"));
    res->oom = json_is_true(json_object_get(f->hdr, "oom"));
    res->truncated = json_is_true(json_object_get(f->hdr, "truncated"));
    json_t *d = json_object_get(f->hdr, "duration_ms");
    res->duration_ms = json_is_integer(d) ? (uint64_t)json_integer_value(d) : 0;
    const char *e = json_string_value(json_object_get(f->hdr, "error"));
    const char *m = json_string_value(json_object_get(f->hdr, "message"));
    res->started = e == NULL;
    snprintf(res->error, sizeof res->error, "%s", e ? e : "");
    snprintf(res->message, sizeof res->message, "%s", m ? m : "");
}

int fb_sandbox_exec(fb_sandbox *sb, const fb_exec_req *req, fb_exec_result *res, fb_err *err)
{
    memset(res, 0, sizeof *res);
    if (sb->broken)
        return fb_fail(err, "sandbox %s is no longer usable", sb->id);
    if (req->timeout_ms == 0)
        return fb_fail(err, "a timeout is required");
    uint64_t id = sb->next_id++;
    json_t *h = NULL;
    if (exec_header(req, id, &h, err) < 0)
        return -1;
    uint64_t oom_before = fb_cgroup_oom_kills(&sb->cg);
    if (send_frame(sb, h, NULL, 0, err) < 0)
        return -1;

    int in_fd = req->stdin_fd;
    uint64_t in_flight = 0;
    /* The agent enforces the output cap; the host checks it too, with room
     * for the truncation marker, so a compromised guest cannot flood us. */
    uint64_t out_cap = (req->max_output ? req->max_output : sb->cfg.max_output) + 4096;
    uint64_t out_seen = 0;
    bool cancel_sent = false;
    uint64_t deadline = fb_now_ns() + (req->timeout_ms + EXEC_SLACK_MS) * 1000000ull;
    uint8_t buf[64 * 1024];
    for (;;) {
        fb_frame f;
        int got = fb_decoder_next(&sb->chan.dec, &f, err);
        if (got < 0) {
            sb->broken = true;
            return -1;
        }
        if (got == 1) {
            int done = 0;
            if (f.id == id) {
                if (strcmp(f.type, "stdout") == 0 || strcmp(f.type, "stderr") == 0) {
                    out_seen += f.payload_len;
                    if (out_seen > out_cap) {
                        fb_fail(err, "sandbox %s sent more output than its cap; ending it", sb->id);
                        sb->broken = true;
                        done = -1;
                    } else if (req->on_output && f.payload_len)
                        req->on_output(req->ctx, f.type[3] == 'o' ? FB_STREAM_STDOUT : FB_STREAM_STDERR,
                                       f.payload, f.payload_len);
                } else if (strcmp(f.type, "stdin_ack") == 0) {
                    json_t *b = json_object_get(f.hdr, "bytes");
                    uint64_t n = json_is_integer(b) ? (uint64_t)json_integer_value(b) : 0;
                    in_flight = n > in_flight ? 0 : in_flight - n;
                } else if (strcmp(f.type, "exit") == 0) {
                    parse_exit(&f, res);
                    done = 1;
                } else if (strcmp(f.type, "error") == 0) {
                    reply_error(&f, err);
                    done = -1;
                }
            } else if (strcmp(f.type, "fatal") == 0) {
                const char *m = json_string_value(json_object_get(f.hdr, "message"));
                fb_fail(err, "sandbox agent failed: %s", m ? m : "(no message)");
                sb->broken = true;
                done = -1;
            }
            fb_frame_clear(&f);
            if (done > 0)
                break;
            if (done < 0)
                return -1;
            continue;
        }
        if (sb->chan.eof) {
            sb->broken = true;
            fb_fail(err, "sandbox %s ended unexpectedly (agent channel closed)", sb->id);
            add_console_hint(sb, err);
            return -1;
        }
        if (req->cancel && *req->cancel && !cancel_sent) {
            json_t *s = fb_hdr_new("signal", id);
            json_object_set_new(s, "signal", json_integer(SIGKILL));
            if (send_frame(sb, s, NULL, 0, err) < 0)
                return -1;
            cancel_sent = true;
        }
        uint64_t now = fb_now_ns();
        if (now >= deadline) {
            sb->broken = true;
            return fb_fail(err, "sandbox %s stopped responding (no exit after the timeout)", sb->id);
        }
        struct pollfd p[3];
        int n = 0;
        p[n++] = (struct pollfd){.fd = sb->chan_fd,
                                 .events = (short)(POLLIN | (fb_chan_queued(&sb->chan) ? POLLOUT : 0))};
        int in_idx = -1;
        if (in_fd >= 0 && in_flight < 1024 * 1024 && fb_chan_queued(&sb->chan) < 1024 * 1024) {
            in_idx = n;
            p[n++] = (struct pollfd){.fd = in_fd, .events = POLLIN};
        }
        int con_idx = -1;
        if (sb->console_fd >= 0) {
            con_idx = n;
            p[n++] = (struct pollfd){.fd = sb->console_fd, .events = POLLIN};
        }
        int wait = (int)((deadline - now) / 1000000ull) + 1;
        if (req->cancel && wait > 100)
            wait = 100;
        if (poll(p, (nfds_t)n, wait) < 0) {
            if (errno == EINTR)
                continue;
            return fb_fail_errno(err, "poll");
        }
        if (p[0].revents & POLLOUT && fb_chan_flush(&sb->chan, err) < 0) {
            sb->broken = true;
            return -1;
        }
        if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            long r = fb_chan_read(&sb->chan, err);
            if (r == -1) {
                sb->broken = true;
                return -1;
            }
        }
        if (con_idx >= 0 && p[con_idx].revents)
            drain_console(sb);
        if (in_idx >= 0 && p[in_idx].revents) {
            ssize_t r = read(in_fd, buf, sizeof buf);
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            json_t *s = fb_hdr_new("stdin", id);
            if (r <= 0) {
                json_object_set_new(s, "eof", json_true());
                in_fd = -1;
                r = 0;
            }
            in_flight += (uint64_t)r;
            if (send_frame(sb, s, buf, (size_t)r, err) < 0)
                return -1;
        }
    }
    /* The agent's guess at OOM is for a VM's own kernel; in a jail the
     * cgroup's counter is the authority. */
    if (sb->ops == &fb_backend_jail)
        res->oom = res->signal == SIGKILL && !res->timed_out && fb_cgroup_oom_kills(&sb->cg) > oom_before;
    return 0;
}

/* ---- files ---------------------------------------------------------------- */

static int simple_request(fb_sandbox *sb, json_t *h, uint64_t id, const void *payload, size_t len,
                          fb_frame *reply, fb_err *err)
{
    if (sb->broken) {
        json_decref(h);
        return fb_fail(err, "sandbox %s is no longer usable", sb->id);
    }
    if (send_frame(sb, h, payload, len, err) < 0)
        return -1;
    if (wait_reply(sb, id, reply, REQUEST_TIMEOUT_MS, err) < 0)
        return -1;
    if (strcmp(reply->type, "ok") != 0) {
        reply_error(reply, err);
        fb_frame_clear(reply);
        return -1;
    }
    return 0;
}

int fb_sandbox_put(fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err)
{
    cleanup_free uint8_t *buf = malloc(FILE_CHUNK);
    if (!buf)
        return fb_fail(err, "out of memory");
    uint64_t offset = 0;
    for (;;) {
        size_t got = 0;
        while (got < FILE_CHUNK) {
            ssize_t n = read(fd, buf + got, FILE_CHUNK - got);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                return fb_fail_errno(err, "cannot read the local file for %s", remote);
            }
            if (n == 0)
                break;
            got += (size_t)n;
        }
        if (got == 0 && offset > 0)
            return 0;
        uint64_t id = sb->next_id++;
        json_t *h = fb_hdr_new("file_put", id);
        json_object_set_new(h, "path", json_string(remote));
        json_object_set_new(h, "offset", json_integer((json_int_t)offset));
        json_object_set_new(h, "mode", json_integer(mode & 0777));
        fb_frame reply;
        if (simple_request(sb, h, id, buf, got, &reply, err) < 0)
            return fb_fail_prefix(err, "cannot put %s", remote);
        fb_frame_clear(&reply);
        offset += got;
        if (got < FILE_CHUNK)
            return 0;
    }
}

int fb_sandbox_get(fb_sandbox *sb, const char *remote, int fd, uint64_t max_bytes, fb_err *err)
{
    uint64_t offset = 0;
    for (;;) {
        uint64_t id = sb->next_id++;
        json_t *h = fb_hdr_new("file_get", id);
        json_object_set_new(h, "path", json_string(remote));
        json_object_set_new(h, "offset", json_integer((json_int_t)offset));
        json_object_set_new(h, "length", json_integer(FB_PROTO_MAX_PAYLOAD));
        fb_frame reply;
        if (simple_request(sb, h, id, NULL, 0, &reply, err) < 0)
            return fb_fail_prefix(err, "cannot get %s", remote);
        json_t *size = json_object_get(reply.hdr, "size");
        if (json_is_integer(size) && (uint64_t)json_integer_value(size) > max_bytes) {
            fb_frame_clear(&reply);
            return fb_fail(err, "cannot get %s: file is larger than the %llu-byte limit", remote,
                           (unsigned long long)max_bytes);
        }
        if (offset + reply.payload_len > max_bytes) {
            fb_frame_clear(&reply);
            return fb_fail(err, "cannot get %s: file grew past the %llu-byte limit", remote,
                           (unsigned long long)max_bytes);
        }
        if (reply.payload_len && fb_write_all(fd, reply.payload, reply.payload_len) < 0) {
            fb_frame_clear(&reply);
            return fb_fail_errno(err, "cannot write the local copy of %s", remote);
        }
        offset += reply.payload_len;
        bool eof = json_is_true(json_object_get(reply.hdr, "eof")) || reply.payload_len == 0;
        fb_frame_clear(&reply);
        if (eof)
            return 0;
    }
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

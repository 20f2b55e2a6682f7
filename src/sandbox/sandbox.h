/*
 * sandbox.h - the sandbox manager's public face.
 *
 * A sandbox is a fresh, disposable isolated machine with the ForgeBox agent
 * inside: created from a verified guest image, used for one or more execs
 * and file transfers, destroyed without a trace.  Two backends sit behind
 * this interface (backend.h): `vm` (QEMU microvm, the default) and `jail`
 * (Linux namespaces, container-grade).  Callers - `forgebox run` today, the
 * gateway tomorrow - never see which one they got beyond its name.
 *
 * A sandbox is used by one thread at a time.
 */
#ifndef FB_SANDBOX_H
#define FB_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

typedef enum { FB_BACKEND_VM = 0, FB_BACKEND_JAIL = 1 } fb_backend_kind;
typedef enum { FB_ACCEL_AUTO = 0, FB_ACCEL_KVM, FB_ACCEL_TCG } fb_accel;

typedef struct fb_sandbox_config {
    fb_backend_kind backend;
    fb_accel accel;          /* vm only */
    uint64_t memory_mib;     /* guest RAM (vm) or memory limit (jail) */
    uint64_t vcpus;
    uint64_t disk_mib;       /* size of /workspace */
    uint64_t tmp_mib;        /* size of /tmp */
    uint64_t pids;           /* processes inside the sandbox */
    uint64_t max_output;     /* default output cap per exec, bytes */
    const char *image_dir;
    const char *state_dir;   /* image verification cache */
    const char *run_dir;     /* runtime files, e.g. /run/forgebox */
} fb_sandbox_config;

/* Limits enforced on configs (documented in docs/cli.md). */
#define FB_MIN_MEMORY_MIB 64
#define FB_MIN_VM_MEMORY_MIB 128
#define FB_MAX_MEMORY_MIB (64 * 1024)
#define FB_MAX_VCPUS 64
#define FB_MAX_DISK_MIB (64 * 1024)
#define FB_MIN_PIDS 16
#define FB_MAX_PIDS 65536

void fb_sandbox_config_defaults(fb_sandbox_config *cfg);
const char *fb_backend_name(fb_backend_kind kind);

typedef struct fb_sandbox fb_sandbox;

/* Boots a sandbox and completes the agent handshake. */
int fb_sandbox_create(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);
const char *fb_sandbox_id(const fb_sandbox *sb);
/* The host process that embodies the sandbox (QEMU, or the jail's init). */
int fb_sandbox_pid(const fb_sandbox *sb);
/* "kvm", "tcg" or "namespaces". */
const char *fb_sandbox_isolation(const fb_sandbox *sb);
/* Ends the sandbox and frees everything it held: process, cgroup, runtime
 * files, uid slot.  Safe on a broken sandbox. */
void fb_sandbox_destroy(fb_sandbox *sb);

enum { FB_STREAM_STDOUT = 1, FB_STREAM_STDERR = 2 };

typedef struct fb_exec_req {
    const char *const *argv;   /* NULL-terminated */
    const char *const *env;    /* NULL-terminated "KEY=VALUE", may be NULL */
    const char *cwd;           /* NULL: /workspace */
    uint64_t timeout_ms;
    uint64_t max_output;       /* 0: the sandbox default */
    int stdin_fd;              /* -1: /dev/null */
    void (*on_output)(void *ctx, int stream, const void *data, size_t len);
    void *ctx;
    volatile sig_atomic_t *cancel; /* set to kill the command */
} fb_exec_req;

typedef struct fb_exec_result {
    bool started;        /* false: the command never ran (see error) */
    int exit_code;       /* valid when signal == 0 */
    int signal;          /* terminating signal, 0 if it exited */
    bool timed_out;
    bool oom;
    bool truncated;
    uint64_t duration_ms;
    char error[32];      /* not_found, not_executable, setup_failed, ... */
    char message[512];
} fb_exec_result;

/* Runs one command.  Returns 0 when the sandbox reported an outcome (see
 * result), -1 when the sandbox itself failed (err says why). */
int fb_sandbox_exec(fb_sandbox *sb, const fb_exec_req *req, fb_exec_result *res, fb_err *err);

/* Copies a local fd into the sandbox (remote path under /workspace or /tmp). */
int fb_sandbox_put(fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err);
/* Copies a sandbox file into a local fd, refusing more than max_bytes. */
int fb_sandbox_get(fb_sandbox *sb, const char *remote, int fd, uint64_t max_bytes, fb_err *err);

/* Cleans up what sandboxes of dead managers left in run_dir (their cgroups
 * and runtime directories).  Called on every create; cheap when clean. */
void fb_sandbox_reap_orphans(const char *run_dir);

/* What the host can do, for `forgebox doctor`. */
typedef struct fb_host_caps {
    bool kvm_usable;
    char kvm_reason[256];
    bool qemu_found;
    char qemu_version[128];
    int cgroup_version;
    char cgroup_desc[128];
    bool userns;
    char userns_desc[128];
} fb_host_caps;
void fb_host_probe(fb_host_caps *caps);

#endif

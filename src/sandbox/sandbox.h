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
 * A sandbox is supervised: one I/O thread per sandbox owns the channel to
 * its agent and routes every frame by request id, so several execs and file
 * transfers run at once, and a slow or absent consumer never stalls the
 * sandbox, other execs, kill or destroy.  Execs are asynchronous: started,
 * then read from a bounded event log that outlives any one reader.
 */
#ifndef FB_SANDBOX_H
#define FB_SANDBOX_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"
#include "proto/errors.h"
#include "proto/msg.h"

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
    bool no_vm_snapshot;     /* vm: neither start from nor make a snapshot
                              * (sandbox.vm_snapshot: false; snapshot.h) */
    uint64_t tcg_cache_mib;  /* vm under TCG: QEMU's translation cache
                              * (sandbox.vm_tcg_cache_mib; vm.c says why
                              * FB_DEFAULT_TCG_CACHE_MIB); unused under KVM */
    /* A network grant.  When set, fb-agent listens on 127.0.0.1:3128
     * inside the sandbox and hands each accepted TCP connection to the
     * host: in a jail as the fd itself over a channel of its own
     * (SCM_RIGHTS; only a connected stream socket is accepted), in a VM as
     * a stream of net_* frames (proto/relay.h) that the host carries on one
     * end of a socketpair.  The I/O thread then calls
     * net_adopt(net_ctx, sandbox_id, fd), which owns fd from then on (the
     * egress proxy's fb_egress_adopt).  The sandbox is known by the channel
     * the connection came on, never by what it says.  NULL: no network. */
    void (*net_adopt)(void *net_ctx, const char *sandbox_id, int fd);
    void *net_ctx;
} fb_sandbox_config;

/* Limits enforced on configs (documented in docs/cli.md). */
#define FB_MIN_MEMORY_MIB 64
#define FB_MIN_VM_MEMORY_MIB 128
#define FB_MAX_MEMORY_MIB (64 * 1024)
#define FB_MAX_VCPUS 64
#define FB_MAX_DISK_MIB (64 * 1024)
#define FB_MIN_PIDS 16
#define FB_DEFAULT_TCG_CACHE_MIB 20
#define FB_MIN_TCG_CACHE_MIB 8
#define FB_MAX_TCG_CACHE_MIB 512
#define FB_MAX_PIDS 65536

void fb_sandbox_config_defaults(fb_sandbox_config *cfg);
const char *fb_backend_name(fb_backend_kind kind);

typedef struct fb_sandbox fb_sandbox;

/* ---- lifecycle --------------------------------------------------------------
 *
 * Threading: every function below may be called from any thread, and
 * several threads may use one sandbox at once (execs, file transfers, kill)
 * - except fb_sandbox_destroy, which must be the last call on it (execs
 * started on it may outlive it, see fb_exec_*).  One I/O thread per sandbox
 * owns the agent channel; it never waits for a caller.
 *
 * Errors: functions returning fb_errc return FB_OK (0) or a typed code
 * (proto/errors.h), with the operator-readable message in err. */

/* Boots a sandbox up to the agent's "ready", with no user data in it yet:
 * something a pool can do ahead of time.  Runs on a long-lived spawner
 * thread of this module (the kernel ties a child's parent-death signal to
 * the thread that created it) while the caller waits.  Blocks for the boot
 * (milliseconds for a jail, seconds for a VM under TCG). */
fb_errc fb_sandbox_boot(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);
/* Marks a booted sandbox as taken, once: FB_E_STATE if it already was, or
 * the sandbox's death code if it died while waiting.  Execs and file
 * transfers are refused (FB_E_STATE) before this. */
fb_errc fb_sandbox_assign(fb_sandbox *sb, fb_err *err);
/* boot + assign.  Returns 0 or -1 (err). */
int fb_sandbox_create(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);
/* fb_sandbox_create with the boot on the calling thread, which must live
 * as long as the sandbox (the kernel's parent-death signal is tied to it):
 * the main thread of a process that makes one sandbox and ends with it
 * (`forgebox run`).  Spares starting a spawner thread and two hand-overs
 * between threads. */
int fb_sandbox_create_here(const fb_sandbox_config *cfg, fb_sandbox **out, fb_err *err);
const char *fb_sandbox_id(const fb_sandbox *sb);
/* The host process that embodies the sandbox (QEMU, or the jail's init),
 * for resource accounting only: never signal it, use fb_sandbox_kill. */
int fb_sandbox_pid(const fb_sandbox *sb);
/* "kvm", "tcg" or "namespaces". */
const char *fb_sandbox_isolation(const fb_sandbox *sb);
/* FB_OK while the sandbox is usable, else why it ended (FB_E_KILLED,
 * FB_E_PROTOCOL, FB_E_SANDBOX_ENDED, FB_E_UNRESPONSIVE, ...). */
fb_errc fb_sandbox_state(fb_sandbox *sb);
/* Ends the sandbox's process at once (SIGKILL through a pidfd).  Every
 * exec in flight ends promptly with FB_E_KILLED, every waiting request
 * fails with it.  Non-blocking, idempotent, safe from any thread while
 * others use the sandbox; the resources are released by destroy. */
void fb_sandbox_kill(fb_sandbox *sb);
/* Ends the sandbox and frees everything it held: process, cgroup, runtime
 * files, uid slot.  A VM's agent is asked to power off first (at most
 * ~2 s) unless the sandbox is already dead; a jail's init is killed (the
 * kernel ends its whole pid namespace); waits for no consumer of any exec.  Safe on
 * a broken sandbox; sb must not be used afterwards by anyone. */
void fb_sandbox_destroy(fb_sandbox *sb);

/* ---- execs ------------------------------------------------------------------ */

enum { FB_STREAM_STDOUT = 1, FB_STREAM_STDERR = 2 };

typedef struct fb_exec_req {
    const char *const *argv;   /* NULL-terminated */
    const fb_env_var *envv;    /* nenv key/value pairs, sent as they are */
    size_t nenv;
    const char *cwd;           /* NULL: /workspace */
    uint64_t timeout_ms;
    uint64_t max_output;       /* 0: the sandbox default */
    int stdin_fd;              /* -1: /dev/null; fb_exec_start dups it */
    /* Used by fb_sandbox_exec only: */
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
    fb_errc code;        /* when !started: FB_E_NOT_FOUND, _NOT_EXECUTABLE, _SETUP_FAILED */
    char error[32];      /* fb_errc_name(code) when !started, else "" */
    char message[512];
} fb_exec_result;

/* Runs one command to its end, calling on_output (on this thread) as
 * output arrives and cancelling it when *cancel becomes non-zero.  Returns
 * 0 when the sandbox reported an outcome (see result), -1 when the command
 * could not be run or the sandbox failed (err says why).  A thin wrapper
 * over fb_exec_start / fb_exec_next. */
int fb_sandbox_exec(fb_sandbox *sb, const fb_exec_req *req, fb_exec_result *res, fb_err *err);

/* An exec handle: reference-counted, thread-safe, independent of whoever
 * started it.  Its event log keeps everything the command produced until
 * the last reference goes, so consumers may come and go. */
typedef struct fb_exec fb_exec;

/* Starts a command (argv, env, cwd, timeout_ms, max_output, stdin_fd of
 * req; the callbacks are ignored).  Refuses up front, leaving the sandbox
 * usable: FB_E_BAD_REQUEST (no command, invalid UTF-8, bad env name),
 * FB_E_TOO_LARGE (argv/env would not fit a frame), FB_E_BUSY (16 commands
 * running already), FB_E_STATE (not assigned); or the sandbox's death code.
 * On success *out holds one reference for the caller.  Never blocks on the
 * sandbox. */
fb_errc fb_exec_start(fb_sandbox *sb, const fb_exec_req *req, fb_exec **out, fb_err *err);
fb_exec *fb_exec_ref(fb_exec *x);
void fb_exec_unref(fb_exec *x);
/* The exec's request id, unique within its sandbox. */
uint64_t fb_exec_id(const fb_exec *x);
/* Bytes the exec's log holds in memory (its arena and descriptors). */
size_t fb_exec_memory(fb_exec *x);

/* The event log.  Every event has a position: output occupies one
 * position per byte, every other event one.  Reading from position p
 * returns the event at p (output from p to the end of its chunk, at most
 * 64 KiB at a time); ev->next is where to read next.  The log ends with
 * exactly one terminal event (EXIT or ERROR).  Output is capped per exec
 * (max_output plus the truncation marker); if the log must drop output to
 * stay within its bounds, a DROPPED event says how many bytes. */
typedef enum {
    FB_EXEC_EV_STDOUT = FB_STREAM_STDOUT,
    FB_EXEC_EV_STDERR = FB_STREAM_STDERR,
    FB_EXEC_EV_DROPPED,  /* dropped: bytes of output not kept */
    FB_EXEC_EV_EXIT,     /* result: how the command ended */
    FB_EXEC_EV_ERROR,    /* code/message: the exec failed (killed, sandbox died, ...) */
} fb_exec_event_kind;

typedef struct fb_exec_event {
    fb_exec_event_kind kind;
    uint64_t pos, next;
    uint8_t *data;       /* STDOUT/STDERR: an owned copy */
    size_t len;
    uint64_t dropped;    /* DROPPED: so far; EXIT/ERROR: the final count */
    fb_exec_result result;
    fb_errc code;
    char message[512];
} fb_exec_event;

/* Waits up to timeout_ms (-1: no limit, 0: just look) for the event at
 * pos.  Returns 1 with *ev filled (release with fb_exec_event_clear), 0 if
 * nothing arrived in time, -1 if pos is past the terminal event or beyond
 * anything the log has.  Never blocks the sandbox: any number of threads
 * may read one exec, each at its own position.  Output chunks end anywhere,
 * also inside a UTF-8 character: clean them per stream with one
 * fb_utf8_cleaner (common/utf8.h) across events. */
int fb_exec_next(fb_exec *x, uint64_t pos, fb_exec_event *ev, int timeout_ms);
void fb_exec_event_clear(fb_exec_event *ev);
/* Waits up to timeout_ms (-1: no limit) for the end.  FB_OK with *res
 * when the command ended; the exec's error code when it failed;
 * FB_E_TIMEOUT if it is still running. */
fb_errc fb_exec_wait(fb_exec *x, int timeout_ms, fb_exec_result *res, fb_err *err);
/* Kills the command's process group (SIGKILL through the agent's
 * "signal").  Its EXIT follows.  Non-blocking; no-op once it ended. */
void fb_exec_cancel(fb_exec *x);
/* Sends one of HUP INT QUIT KILL USR1 USR2 TERM CONT STOP TSTP to the
 * command's process group.  FB_E_BAD_REQUEST for other signals. */
fb_errc fb_exec_signal(fb_exec *x, int sig, fb_err *err);

/* ---- files ------------------------------------------------------------------ */

/* Copies a local fd into the sandbox (remote path under /workspace or /tmp).
 * Typed: FB_E_NOT_FOUND, FB_E_BAD_PATH, FB_E_NO_SPACE, ... or the death
 * code.  Blocks until done; other threads may use the sandbox meanwhile. */
fb_errc fb_file_put(fb_sandbox *sb, const char *remote, int fd, unsigned mode, fb_err *err);
/* Copies a sandbox file into a local fd, refusing more than max_bytes
 * (FB_E_TOO_LARGE, checked before anything past max_bytes is written). */
fb_errc fb_file_get(fb_sandbox *sb, const char *remote, int fd, uint64_t max_bytes, fb_err *err);

/* Cleans up what sandboxes of dead managers left in run_dir (their cgroups
 * and runtime directories, or a jail's record file).  Called on every
 * create; cheap when clean. */
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

/*
 * backend.h - what a sandbox backend implements, and the sandbox state the
 * backends share with the manager (sandbox.c).
 *
 * A backend starts "something that runs fb-agent at the other end of a
 * byte stream" inside the cgroup the manager made, and stops it.  Every
 * other part of a sandbox's life - image verification, the uid slot, the
 * cgroup, the handshake, execs, files, cleanup order - is the manager's and
 * the same for all backends.
 */
#ifndef FB_BACKEND_H
#define FB_BACKEND_H

#include <pthread.h>
#include <sys/types.h>

#include "proto/msg.h"
#include "proto/proto.h"
#include "sandbox/cgroup.h"
#include "sandbox/netns.h"
#include "sandbox/sandbox.h"

/* Host uids for sandboxes: slot N owns [BASE + N*RANGE, BASE + (N+1)*RANGE).
 * Far above any normal account or subuid range. */
#define FB_UID_BASE 0x40000000u
#define FB_UID_RANGE 65536u
#define FB_MAX_SLOTS 1024
/* The slot locks.  Uid ranges are host-wide, so their locks are too: two
 * managers with different runtime directories (two gateways, a gateway and
 * `forgebox run`, parallel test workers) must never share a range.  Each
 * lock file holds the id of the sandbox that holds it. */
#define FB_SLOT_DIR "/run/forgebox-slots"

struct fb_request;

struct fb_sandbox {
    char id[32];
    fb_sandbox_config cfg;
    char image_dir[4096];
    char run_path[4096];       /* run_dir/<id> */
    const struct fb_backend_ops *ops;
    fb_accel accel;            /* vm: what is really in use */
    int slot;
    int slot_fd;
    uid_t uid_base;
    fb_cgroup cg;
    pid_t pid;                 /* QEMU, or the jail's init (the agent) */
    int chan_fd;
    int net_fd;                /* jail with a grant: SCM_RIGHTS from fb-agent; else -1 */
    struct fb_relay *relay;    /* vm with a grant: streams over the agent channel; else NULL */
    fb_chan chan;
    int console_fd;            /* vm: serial console and QEMU's stderr */
    char console[4096];        /* ring of the console's last bytes */
    size_t console_len;
    char kernel[128];
    int pidfd;                 /* of pid: kill() without pid reuse races */
    fb_netns netns;            /* jail: its network and IPC namespaces, made ahead */

    /* Supervision (supervisor.c).  mu guards everything below and the
     * send queue of chan; the decoder and the console ring belong to the
     * I/O thread alone once it runs. */
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* broadcast on every change a waiter may want */
    bool cv_owed;              /* the I/O thread changed something under mu: it
                                  broadcasts cv once it has let mu go
                                  (fb_sup_notify_locked) */
    pthread_t io_thread;
    bool io_started;
    int wake_fd;               /* eventfd: wakes the I/O thread's poll */
    uint64_t io_wake_ns;       /* when the I/O thread's poll ends by itself at the
                                  latest (0: not polling yet) */
    unsigned refs;             /* the owner's + one per exec handle */
    uint64_t next_id;
    bool assigned;
    bool stopping;             /* destroy: the I/O thread returns */
    fb_errc dead;              /* FB_OK while usable; why it ended */
    char dead_msg[512];
    struct fb_exec *execs;     /* running execs (the sandbox holds a ref) */
    unsigned nexecs;
    struct fb_request *reqs;   /* requests waiting for their reply */

    /* A sandbox that runs on a node (node/client.c): its agent channel
     * leads to a translator; its file transfers go straight to the node
     * through these hooks.  NULL for every local sandbox. */
    const struct fb_sandbox_remote *remote;
    void *remote_ctx;
    char remote_isolation[16];
};

struct fb_backend_ops {
    const char *name;
    unsigned image_needs;      /* FB_IMAGE_NEEDS_* */
    /* Cgroup memory for the whole sandbox given the configured memory. */
    uint64_t (*cgroup_memory)(const fb_sandbox *sb);
    uint64_t (*cgroup_pids)(const fb_sandbox *sb);
    /* May be NULL.  Called once the config is checked, before the image
     * check, the slot and the cgroup: starts work that needs none of them
     * and runs meanwhile.  Whatever it started, start uses or destroy
     * undoes. */
    void (*begin)(fb_sandbox *sb);
    /* Spawns into sb->cg; sets sb->pid, sb->chan_fd (and console_fd). */
    int (*start)(fb_sandbox *sb, fb_err *err);
    /* sb->pid is the init of the sandbox's own pid namespace: SIGKILL to
     * it ends every process of the sandbox before it can be reaped, so
     * destroy kills it instead of asking the agent to power off. */
    bool kill_stops;
    /* Nothing of the sandbox lives under run_dir on the host: its record
     * there (the slot, for orphan reaping) is the file run_path instead
     * of a directory (sandbox.c). */
    bool run_record_file;
};

extern const struct fb_backend_ops fb_backend_vm;
extern const struct fb_backend_ops fb_backend_jail;

/* vm.c: which accelerator this host can really use. */
fb_accel fb_vm_detect_accel(char *why, size_t cap);

#endif

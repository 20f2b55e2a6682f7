/*
 * pid1.h - the agent's duties as the sandbox's init process.
 *
 * The same steps serve both backends: in a VM the agent is PID 1 of the
 * guest kernel (started by the initramfs with a read-only root); in a jail
 * it is PID 1 of a fresh pid namespace, already pivoted into the read-only
 * rootfs by the host.  Differences are confined to fb_pid1_setup_dev().
 */
#ifndef FB_AGENT_PID1_H
#define FB_AGENT_PID1_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

typedef enum { FB_MODE_VM, FB_MODE_JAIL } fb_agent_mode;

/* /proc (hidepid=2) with its dangerous corners masked, /dev, /dev/shm
 * (a VM's; a jail's come from the host). */
int fb_pid1_mount_base(fb_agent_mode mode, fb_err *err);
/* Size-limited tmpfs on /workspace and /tmp, owned by the tool user (in
 * a VM; in a jail the host mounted them: call fb_pid1_mount_base first). */
int fb_pid1_mount_scratch(uint64_t workspace_mib, uint64_t tmp_mib, fb_err *err);
/* Kills every other process in the sandbox (SIGKILL) and reaps them. */
void fb_pid1_kill_all(void);
/* Ends the sandbox: power off in a VM, exit in a jail.  Never returns. */
void fb_pid1_poweroff(fb_agent_mode mode, int status) __attribute__((noreturn));

#endif

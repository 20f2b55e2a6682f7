/*
 * snapshot.h - VM snapshots: where they live, when one is made, and the
 * verification before one is used (issue 9 item 3).
 *
 * A VM snapshot is QEMU's migration stream of a microVM whose agent has
 * just opened its channel and waits for "hello": the state every VM of the
 * same shape passes through on its way to ready, with no sandbox's data in
 * it.  The first VM of a shape boots cold and saves it (vm.c); later VMs of
 * that shape start from it with `-incoming` in a fraction of a cold boot.
 * What a VM may not share with its siblings (random state, clock) is set
 * fresh by the agent from hello's seed and time (proto/msg.h).
 *
 * The shape is everything the saved state depends on: QEMU's argv (memory,
 * vCPUs, accelerator, kernel command line), the QEMU binary's identity, the
 * image's manifest digest and the host's boot id (the guest's TSC under TCG
 * is the host's).  Its sha256 names the files in STATE_DIR/vm-snapshots/
 * (root-only, 0700):
 *     <key>.snap   the migration stream, 0400
 *     <key>.json   {"shape", "sha256", "size", "verified"}, 0600
 *     <key>.lock   flock'd by the one process making <key>.snap; its mtime
 *                  says when the shape was last used (eviction)
 * A snapshot is verified like the image: its sha256 is recorded when made
 * and checked before use; a match is remembered as the file's stat
 * fingerprint (device, inode, size, mtime and ctime in ns), so an unchanged
 * file is not rehashed on every start, while any write to it changes its
 * ctime and forces a full check.  A snapshot that fails (wrong size, wrong
 * digest, another shape, not root's) is refused with a log line, deleted,
 * and the VM boots cold and makes it again.
 */
#ifndef FB_SNAPSHOT_H
#define FB_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

/* Snapshots kept at once (one per shape); making one more removes the
 * least recently used. */
#define FB_SNAP_MAX_SHAPES 8

typedef enum {
    FB_SNAP_NONE = 0, /* boot cold; make nothing (off, or another process is making it) */
    FB_SNAP_RESTORE,  /* fd: the verified snapshot, read-only, at offset 0 */
    FB_SNAP_MAKE,     /* fd: an empty file to save into; then commit or abort */
} fb_snap_mode;

typedef struct fb_snap {
    fb_snap_mode mode;
    int fd;
    int lock_fd;
    char key[65];
    char dir[4200];
    const char *shape;
} fb_snap;

/* Hex sha256 of a shape description (65 bytes). */
void fb_snap_key(const char *shape, char key[65]);

/* Decides how one VM of `shape` starts and opens what it needs.  Never
 * fails the VM: any problem (a refused snapshot, an unusable directory) is
 * logged to stderr and the answer is FB_SNAP_MAKE or FB_SNAP_NONE.  shape
 * must outlive s. */
fb_snap_mode fb_snap_prepare(const char *state_dir, const char *shape, fb_snap *s);

/* s->fd holds a complete migration stream: seals it (0400, fsync), records
 * its digest and shape, publishes it under its key.  -1 with err. */
int fb_snap_commit(fb_snap *s, fb_err *err);

/* A snapshot that verified but QEMU would not load: deletes it (the next
 * prepare makes it again) and closes s. */
void fb_snap_discard(fb_snap *s);

/* Releases what prepare opened; a snapshot being made and not committed is
 * deleted. */
void fb_snap_close(fb_snap *s);

#endif

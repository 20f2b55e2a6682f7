/*
 * jailroot.h - the jail's root: one shared read-only EROFS mount of a
 * verified image, under a per-jail overlay.
 *
 * See jailroot.c for why the root is shared this way and what stays each
 * jail's own.
 */
#ifndef FB_SANDBOX_JAILROOT_H
#define FB_SANDBOX_JAILROOT_H

#include "common/util.h"

/* Where the shared mounts live, under the runtime directory (root only,
 * 0700). */
#define FB_JAILROOT_DIR "jail-root"

/* Mounts the EROFS image open at erofs_fd (path for messages) as a
 * detached tree, read-only (the superblock too), nosuid, nodev.  Returns
 * its fd, -1 with err set, or -2 when this kernel cannot mount EROFS from
 * a file. */
int fb_jailroot_erofs_tree(int erofs_fd, const char *path, fb_err *err);

/* The jail's root as a detached tree: an overlay of this jail alone whose
 * only visible layer is the shared EROFS mount of the image file open at
 * erofs_fd (image_dir's, a real path), which must have just passed the
 * image check.  The shared mount is re-used while the file's identity
 * (device, inode, size, mtime, ctime) is the one it was made from, else
 * made anew under run_dir and the image directory's previous one
 * detached.  Returns the tree's fd, -1 with err set, or
 * -2 when this host cannot (no overlayfs, no file-backed EROFS): the
 * caller mounts a superblock of the jail's own instead (as it may on -1:
 * the shared root is only faster). */
int fb_jailroot_open(const char *run_dir, const char *image_dir, int erofs_fd, const char *path,
                     fb_err *err);

/* For doctor: the shared mounts under run_dir/jail-root (one per image
 * directory), comma-separated, or "" if there is none. */
void fb_jailroot_describe(const char *run_dir, char *out, size_t cap);

#endif

/*
 * image.h - the guest image: its manifest, sealing and verification.
 *
 * An image directory holds vmlinuz, initrd.img, rootfs.ext4 (vm backend),
 * rootfs.erofs (the jail's root, optional), rootfs/ (the tree both were
 * made from) and manifest.json, which records the package
 * versions and the sha256 of every artifact (a canonical tree digest for
 * the rootfs directory).  `forgebox image seal` writes the manifest at the
 * end of the image build; the sandbox manager verifies the artifacts a
 * backend needs before every start and refuses a modified image.
 *
 * Re-hashing hundreds of megabytes per start would dominate start-up, so a
 * successful full verification is remembered in the state directory keyed
 * by a stat fingerprint (inode, size, mtime and ctime in nanoseconds of
 * every file involved).  Any write to an artifact changes its ctime, which
 * userspace cannot set back, so a modified artifact always misses the
 * cache and is hashed again - and refused.
 */
#ifndef FB_IMAGE_H
#define FB_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/util.h"

#define FB_IMAGE_NEEDS_VM 1u   /* vmlinuz, initrd.img, rootfs.ext4 */
#define FB_IMAGE_NEEDS_JAIL 2u /* rootfs/ */
/* rootfs.erofs, the jail's root when the image has one (built where
 * mkfs.erofs exists): checked when the manifest lists it, and its
 * presence without a manifest entry is refused, so that a jail that finds
 * the file after verification knows it was verified. */
#define FB_IMAGE_NEEDS_EROFS 4u
#define FB_IMAGE_EROFS "rootfs.erofs"

/* Writes DIR/manifest.json for the artifacts in DIR. */
int fb_image_seal(const char *image_dir, fb_err *err);

/* Verifies what `needs` asks for against the manifest.  state_dir may be
 * NULL (no cache: always a full verification). */
int fb_image_verify(const char *image_dir, const char *state_dir, unsigned needs, fb_err *err);

/* The canonical digest of a directory tree (lower-case hex, 65 bytes). */
int fb_image_tree_digest(const char *dir, char out[65], uint64_t *entries, fb_err *err);
/* sha256 of a file (lower-case hex). */
int fb_image_file_digest(const char *path, char out[65], uint64_t *size, fb_err *err);

/* Reads the kernel version the manifest records (for doctor). */
int fb_image_describe(const char *image_dir, char *kernel, size_t kcap, uint64_t *npackages,
                      fb_err *err);

#endif

#!/bin/bash
# Build the ForgeBox guest image.
#
#   guest/build-image.sh OUT_DIR AGENT_BINARY
#
# Produces in OUT_DIR: vmlinuz, initrd.img, rootfs/, rootfs.ext4, rootfs.erofs
# (when mkfs.erofs exists), packages.txt,
# boot-packages.txt, kernel-version.txt (and manifest.json, written by
# `forgebox image seal`). Every input is pinned in guest/image.conf. Runs as
# root, is idempotent, and builds into a staging directory next to OUT_DIR that
# replaces OUT_DIR only once complete, so a failed build never leaves a
# half-built image in OUT_DIR. Downloaded .debs are kept in a cache directory
# (FORGEBOX_IMAGE_CACHE, default OUT_DIR/../cache).
#
# Environment:
#   FORGEBOX               path of the forgebox binary used to seal the image
#                          (default: <repo>/build/forgebox)
#   FORGEBOX_IMAGE_CACHE   .deb cache directory (default: OUT_DIR/../cache)
#   FORGEBOX_APT_SOURCES   space-separated apt sources files for mmdebstrap
#                          (default: the host's /etc/apt/sources.list and
#                          /etc/apt/sources.list.d/*.list|*.sources)
#   SOURCE_DATE_EPOCH      overrides IMAGE_SOURCE_DATE_EPOCH from image.conf
# shellcheck disable=SC2016 # literal $1 and ${...} below are for mmdebstrap and dpkg-query
set -eu -o pipefail

prog=build-image
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }

[ "$#" -eq 2 ] || { echo "usage: $0 OUT_DIR AGENT_BINARY" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap, device nodes, file ownership)"

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=image.conf
. "$here/image.conf"

out_arg=$1
agent=$2
if [ ! -f "$agent" ] || [ ! -x "$agent" ]; then die "agent binary '$agent' is not an executable file"; fi
agent=$(readlink -f "$agent")

for tool in mmdebstrap mkfs.ext4 debugfs dumpe2fs e2fsck cpio dpkg-deb flock apt-get apt-cache modinfo sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (run scripts/install-deps.sh)"
done

case "$out_arg" in
    /*) out=$out_arg ;;
    *) out=$(pwd)/$out_arg ;;
esac
out=${out%/}
parent=$(dirname "$out")
mkdir -p "$parent"
parent=$(cd "$parent" && pwd)
out=$parent/$(basename "$out")
cache=${FORGEBOX_IMAGE_CACHE:-$parent/cache}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$IMAGE_SOURCE_DATE_EPOCH}
export LC_ALL=C TZ=UTC
umask 022

# One build per OUT_DIR at a time; then clear staging dirs of killed builds.
exec 9>"$parent/.$(basename "$out").lock"
flock -n 9 || die "another build of $out is running"
for d in "$parent/.$(basename "$out").build."* "$parent/.$(basename "$out").old."*; do
    if [ -d "$d" ]; then rm -rf --one-file-system "$d"; fi
done

# Staging directory on the same filesystem as OUT_DIR, removed on failure.
stage=$(mktemp -d "$parent/.$(basename "$out").build.XXXXXX")
work=$stage/.work
cleanup() {
    rc=$?
    if [ -n "${stage:-}" ] && [ -d "$stage" ]; then
        rm -rf --one-file-system "$stage"
    fi
    [ "$rc" -eq 0 ] || log "build FAILED (exit $rc); $out left untouched"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
mkdir -p "$work"

# --- fetch a pinned .deb into the cache and verify its pinned sha256 --------
fetch_deb() { # NAME VERSION SHA256 -> prints path of the .deb
    local name=$1 version=$2 sum=$3 deb f
    deb=""
    for f in "$cache/${name}_"*.deb; do
        [ -f "$f" ] || continue
        if [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ]; then deb=$f; break; fi
    done
    if [ -z "$deb" ]; then
        log "downloading $name=$version"
        (cd "$cache" && apt-get -q -o APT::Sandbox::User=root download "$name=$version" >&2) ||
            die "cannot download $name=$version (superseded in the archive? bump guest/image.conf)"
        for f in "$cache/${name}_"*.deb; do
            [ -f "$f" ] || continue
            if [ "$(sha256sum "$f" | cut -d' ' -f1)" = "$sum" ]; then deb=$f; break; fi
        done
        [ -n "$deb" ] || die "$name=$version: downloaded .deb does not match the sha256 pinned in image.conf"
    fi
    printf '%s\n' "$deb"
}

# --- 1. kernel ---------------------------------------------------------------
kdeb=$(fetch_deb "$KERNEL_PACKAGE" "$KERNEL_VERSION" "$KERNEL_DEB_SHA256")
log "unpacking $(basename "$kdeb")"
dpkg-deb -x "$kdeb" "$work/kernel"
kboot=$work/kernel/boot
kmod=$work/kernel/lib/modules/$KERNEL_RELEASE
[ -f "$kboot/vmlinuz-$KERNEL_RELEASE" ] || die "vmlinuz-$KERNEL_RELEASE not in $KERNEL_PACKAGE"
install -m 0644 "$kboot/vmlinuz-$KERNEL_RELEASE" "$stage/vmlinuz"
kconfig=$kboot/config-$KERNEL_RELEASE
[ -f "$kconfig" ] || die "config-$KERNEL_RELEASE not in $KERNEL_PACKAGE"
for opt in CONFIG_EXT4_FS CONFIG_DEVTMPFS CONFIG_BLK_DEV_INITRD CONFIG_SERIAL_8250_CONSOLE CONFIG_ACPI; do
    grep -qx "$opt=y" "$kconfig" || die "kernel $KERNEL_RELEASE: $opt is not built in"
done
printf '%s\n' "$KERNEL_RELEASE" >"$stage/kernel-version.txt"

# --- 2. initramfs --------------------------------------------------------------
bdeb=$(fetch_deb "$BUSYBOX_PACKAGE" "$BUSYBOX_VERSION" "$BUSYBOX_DEB_SHA256")
dpkg-deb -x "$bdeb" "$work/busybox"
ird=$work/initrd
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
install -m 0755 "$work/busybox/bin/busybox" "$ird/bin/busybox"
for applet in sh mount umount insmod switch_root poweroff usleep; do
    ln -s busybox "$ird/bin/$applet"
done
mknod -m 0600 "$ird/dev/console" c 5 1
mknod -m 0666 "$ird/dev/null" c 1 3

# Only modules that are not built in, with their dependencies before them.
declare -A mod_done=()
mod_order=()
add_module() {
    local name=$1 path dep
    [ -z "${mod_done[$name]:-}" ] || return 0
    mod_done[$name]=1
    if grep -q "/$name\.ko\$" "$kmod/modules.builtin" 2>/dev/null; then
        return 0  # built in, nothing to load
    fi
    path=$(find "$kmod/kernel" -name "$name.ko" -print -quit)
    [ -n "$path" ] || die "module $name not found in $KERNEL_PACKAGE"
    for dep in $(modinfo -F depends "$path" | tr ',' ' '); do
        add_module "$dep"
    done
    install -m 0644 "$path" "$ird/lib/modules/$name.ko"
    mod_order+=("$name")
}
for m in $INITRD_MODULES; do add_module "$m"; done
log "initramfs modules: ${mod_order[*]}"
sed "s|@MODULES@|${mod_order[*]}|" "$here/init" >"$ird/init"
chmod 0755 "$ird/init"

find "$ird" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
# Uncompressed: under TCG the kernel's gunzip costs more than copying the extra
# bytes (see guest/README.md for the measurement).
(cd "$ird" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) >"$stage/initrd.img"
chmod 0644 "$stage/initrd.img"

# --- 3. rootfs -----------------------------------------------------------------
sources=()
if [ -n "${FORGEBOX_APT_SOURCES:-}" ]; then
    for f in $FORGEBOX_APT_SOURCES; do
        [ -f "$f" ] || die "FORGEBOX_APT_SOURCES: no such file $f"
        sources+=("$f")
    done
else
    if [ -s /etc/apt/sources.list ]; then sources+=(/etc/apt/sources.list); fi
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        if [ -f "$f" ]; then sources+=("$f"); fi
    done
fi
[ "${#sources[@]}" -gt 0 ] || die "no apt sources found in /etc/apt"

rootfs=$stage/rootfs
# shellcheck disable=SC2086 # word splitting intended
pkgs=$(printf '%s\n' $ROOTFS_PACKAGES | paste -sd, -)
log "mmdebstrap $DEBIAN_SUITE (minbase + $pkgs)"
mmdebstrap --quiet --mode=root --format=directory --variant=minbase \
    --include="$pkgs" \
    --aptopt='APT::Install-Recommends "false"' \
    --aptopt='APT::Install-Suggests "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/bash-completion/*' \
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
    "$DEBIAN_SUITE" "$rootfs" "${sources[@]}" ||
    die "mmdebstrap failed (a pinned version superseded in the archive? bump guest/image.conf)"

# Check the explicitly requested packages got exactly their pinned versions.
for pv in $ROOTFS_PACKAGES; do
    name=${pv%%=*} want=${pv#*=}
    have=$(chroot "$rootfs" dpkg-query -W -f='${Version}' "$name" 2>/dev/null) || have=""
    [ "$have" = "$want" ] || die "rootfs: $name is '$have', pinned '$want'"
done
chroot "$rootfs" dpkg-query -W -f='${binary:Package} ${Version}\n' | sed 's/:amd64 / /' | sort >"$stage/packages.txt"
{
    printf '%s %s\n' "$KERNEL_PACKAGE" "$KERNEL_VERSION"
    printf '%s %s\n' "$BUSYBOX_PACKAGE" "$BUSYBOX_VERSION"
} >"$stage/boot-packages.txt"

# No package manager in the guest.
rm -rf "$rootfs"/var/lib/dpkg "$rootfs"/var/lib/apt "$rootfs"/var/cache/apt \
    "$rootfs"/var/log/apt "$rootfs"/etc/apt "$rootfs"/etc/dpkg \
    "$rootfs"/usr/lib/apt "$rootfs"/usr/lib/dpkg "$rootfs"/usr/share/dpkg \
    "$rootfs"/usr/share/apt "$rootfs"/usr/libexec/dpkg \
    "$rootfs"/etc/cron.daily/apt-compat "$rootfs"/etc/cron.daily/dpkg \
    "$rootfs"/etc/logrotate.d/apt "$rootfs"/etc/logrotate.d/dpkg
rm -f "$rootfs"/usr/bin/apt "$rootfs"/usr/bin/apt-* "$rootfs"/usr/bin/dpkg "$rootfs"/usr/bin/dpkg-* \
    "$rootfs"/usr/sbin/dpkg-* "$rootfs"/usr/lib/x86_64-linux-gnu/libapt-*
# Docs, man pages, locales, caches, logs.
find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/man "$rootfs"/usr/share/info "$rootfs"/usr/share/lintian \
    "$rootfs"/usr/share/linda "$rootfs"/usr/share/bash-completion
find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/cache/ldconfig/aux-cache
find "$rootfs/var/log" -type f -delete
find "$rootfs/tmp" "$rootfs/var/tmp" -mindepth 1 -delete

# Identity files.
echo forgebox >"$rootfs/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
: >"$rootfs/etc/machine-id"

# The unprivileged user.
if grep -q "^[^:]*:[^:]*:$GUEST_UID:" "$rootfs/etc/passwd" || grep -q "^$GUEST_USER:" "$rootfs/etc/passwd"; then
    die "rootfs already has uid $GUEST_UID or user $GUEST_USER"
fi
echo "$GUEST_USER:x:$GUEST_UID:$GUEST_GID:ForgeBox:/workspace:/bin/bash" >>"$rootfs/etc/passwd"
echo "$GUEST_USER:x:$GUEST_GID:" >>"$rootfs/etc/group"
echo "$GUEST_USER:*:$((SOURCE_DATE_EPOCH / 86400)):0:99999:7:::" >>"$rootfs/etc/shadow"
if [ -f "$rootfs/etc/gshadow" ]; then echo "$GUEST_USER:!::" >>"$rootfs/etc/gshadow"; fi

# Mount points.
install -d -m 0755 -o "$GUEST_UID" -g "$GUEST_GID" "$rootfs/workspace"
install -d -m 1777 "$rootfs/tmp"
install -d -m 0755 "$rootfs/proc" "$rootfs/sys" "$rootfs/dev"
find "$rootfs/dev" -mindepth 1 -delete   # devtmpfs is mounted over it

# The agent.
install -m 0755 -o 0 -g 0 "$agent" "$rootfs/sbin/fb-agent"

# No setuid/setgid anywhere.
find "$rootfs" -xdev -perm /6000 -exec chmod ug-s {} +
[ -z "$(find "$rootfs" -xdev -perm /6000 -print -quit)" ] || die "setuid/setgid bits remain"

# Clamp timestamps.
find "$rootfs" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

# --- 4. rootfs.ext4 ------------------------------------------------------------
used_kib=$(du -s -x --block-size=1K "$rootfs" | cut -f1)
inodes=$(find "$rootfs" -xdev | wc -l)
size_kib=$(( (used_kib * 115 / 100 + 16384 + 1023) / 1024 * 1024 ))
inodes=$(( inodes * 12 / 10 + 1024 ))
log "rootfs.ext4: ${size_kib} KiB, $inodes inodes"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -t ext4 \
    -b 4096 -I 256 -m 0 -N "$inodes" \
    -O '^has_journal,^resize_inode' \
    -L "$ROOTFS_LABEL" -U "$ROOTFS_UUID" \
    -E "hash_seed=$ROOTFS_HASH_SEED,lazy_itable_init=0,root_owner=0:0" \
    -d "$rootfs" "$stage/rootfs.ext4" "${size_kib}K"
# mkfs.ext4 -d copies each file's atime and ctime from the build tree (ctime is
# the time of this build and cannot be set with touch); clamp them in the image
# so rootfs.ext4 is bit-for-bit reproducible. Used inodes are read from the
# inode bitmaps (dumpe2fs "Free inodes" ranges); 1 and 3-10 are reserved.
ninodes=$(dumpe2fs -h "$stage/rootfs.ext4" 2>/dev/null | awk -F: '/^Inode count/ {gsub(/ /, "", $2); print $2}')
dumpe2fs "$stage/rootfs.ext4" 2>/dev/null | awk -v total="$ninodes" -v e="$SOURCE_DATE_EPOCH" '
    /^  Free inodes:/ {
        sub(/^  Free inodes: */, "")
        n = split($0, r, /, */)
        for (i = 1; i <= n; i++) {
            if (r[i] == "") continue
            m = split(r[i], ab, "-"); a = ab[1] + 0; b = (m > 1) ? ab[2] + 0 : a
            for (j = a; j <= b; j++) free[j] = 1
        }
    }
    END {
        for (i = 1; i <= total; i++)
            if (!(i in free) && (i == 2 || i >= 11))
                printf "sif <%d> ctime @%s\nsif <%d> atime @%s\n", i, e, i, e
    }' >"$work/debugfs.cmds"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH debugfs -w -f "$work/debugfs.cmds" "$stage/rootfs.ext4" >/dev/null 2>"$work/debugfs.err" ||
    die "debugfs failed: $(cat "$work/debugfs.err")"
if grep -v '^debugfs [0-9]' "$work/debugfs.err" | grep -q .; then
    die "debugfs: $(grep -v '^debugfs [0-9]' "$work/debugfs.err" | head -n 3)"
fi
e2fsck -fn "$stage/rootfs.ext4" >"$work/e2fsck.log" 2>&1 || die "rootfs.ext4 fails e2fsck: $(tail -n 5 "$work/e2fsck.log")"
chmod 0644 "$stage/rootfs.ext4"

# --- 4b. rootfs.erofs (the jail's root, where mkfs.erofs exists) -----------------
# The same tree as rootfs.ext4, which a jail mounts straight from the file
# (kernel 6.12+: no loop device; src/sandbox/jail.c says why).  Optional: a
# jail without it uses rootfs.ext4.  Reproducible: fixed UUID and build time,
# the tree's (clamped) modification times kept, uncompressed.
if command -v mkfs.erofs >/dev/null 2>&1; then
    mkfs.erofs --quiet -T "$SOURCE_DATE_EPOCH" --preserve-mtime -U "$ROOTFS_UUID" \
        "$stage/rootfs.erofs" "$rootfs" || die "mkfs.erofs failed"
    chmod 0644 "$stage/rootfs.erofs"
    log "rootfs.erofs: $(du -k --apparent-size "$stage/rootfs.erofs" | cut -f1) KiB"
else
    log "mkfs.erofs not found (erofs-utils): no rootfs.erofs; jails will use rootfs.ext4"
fi

rm -rf "$work"

# --- 5. seal (digests + manifest.json) -----------------------------------------
fbbin=${FORGEBOX:-$here/../build/forgebox}
if [ -x "$fbbin" ]; then
    # Sealed in the staging directory so OUT_DIR only ever holds sealed images.
    "$fbbin" image seal "$stage" || die "'$fbbin image seal' failed"
else
    log "WARNING: $fbbin not found; image NOT sealed (no manifest.json)"
fi

# --- move into place -----------------------------------------------------------
chmod 0755 "$stage"
old=""
if [ -e "$out" ]; then
    old=$parent/.$(basename "$out").old.$$
    mv "$out" "$old"
fi
mv "$stage" "$out"
stage=""
if [ -n "$old" ]; then rm -rf --one-file-system "$old"; fi
log "done: $out ($(du -sh --apparent-size "$out/rootfs.ext4" | cut -f1) rootfs.ext4, $(du -sh --apparent-size "$out/initrd.img" | cut -f1) initrd.img)"

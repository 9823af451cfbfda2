#!/usr/bin/env bash
# Builds Roam's own image, with no registry and no Docker engine: one
# docker-archive holding /roam-operator and /roam-csi (entrypoint), plus the
# host tools the node plugin runs (mount, losetup, blkid, mkfs, resize) with
# the shared libraries they and the Roam binaries link against, and a busybox
# shell for debugging. The sidecar images (csi-provisioner, csi-attacher,
# csi-resizer, csi-snapshotter) and external-snapshotter's snapshot-controller
# are made the same way from the pinned binaries in .tools/bin.
#
#   e2e/images/roam-image.sh [debug|release] [--no-sidecars]
#       prints "<ref> <tarball>" per image; --no-sidecars builds Roam's image
#       only (for clusters that pull the upstream sidecar images: e2e/kind)
#
# Tarballs are cached under ${ROAM_CACHE}/images/, named by a hash of what
# went into them, so an unchanged build is not packed again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$here/../.." && pwd)"
# shellcheck source=e2e/images/lib-archive.sh
source "$here/lib-archive.sh"

profile="${1:-debug}"
sidecars=1
[[ "${2:-}" == --no-sidecars ]] && sidecars=0
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}/$profile"
tools_bin="${ROAM_TOOLS:-$repo_root/.tools}/bin"
cache="${ROAM_CACHE:-$HOME/.cache/roam}/images"
mkdir -p "$cache"

# Host programs the node plugin calls. Resolved on this machine (Debian's
# util-linux, e2fsprogs, xfsprogs, fuse3).
NODE_TOOLS=(mount umount losetup blkid mkfs.ext4 mkfs.xfs resize2fs e2fsck xfs_growfs fusermount3 busybox)

die() { echo "roam-image.sh: $*" >&2; exit 1; }

# Copies an executable and every shared library it loads into the rootfs,
# keeping their absolute paths, so the image runs them as the host does.
copy_with_libs() {
    local root="$1" exe="$2" dest="${3:-$2}" lib
    install -D -m 0755 "$exe" "$root$dest"
    while read -r lib; do
        [[ -n "$lib" && -e "$lib" ]] || continue
        [[ -e "$root$lib" ]] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$exe" 2>/dev/null | grep -oE '/[^ ]+' || true)
}

# A key for everything that goes into an image: the files' bytes and this script.
key_of() {
    sha256sum "$@" "${BASH_SOURCE[0]}" "$here/lib-archive.sh" | sha256sum | cut -c1-16
}

build_roam() {
    local operator="$target_dir/roam-operator" csi="$target_dir/roam-csi" tool paths=() key out root
    [[ -x "$operator" && -x "$csi" ]] || die "missing $operator or $csi: run 'cargo build --bins${profile/debug/}' first"
    for tool in "${NODE_TOOLS[@]}"; do
        paths+=("$(command -v "$tool" || die "host tool '$tool' not found (make tools installs it)")")
    done
    key="$(key_of "$operator" "$csi" "${paths[@]}")"
    out="$cache/roam-$key.tar"
    if [[ ! -f "$out" ]]; then
        root="$(mktemp -d)"
        copy_with_libs "$root" "$operator" /roam-operator
        copy_with_libs "$root" "$csi" /roam-csi
        # Debug info is most of a debug build's size; the image does not need it.
        strip --strip-debug "$root/roam-operator" "$root/roam-csi"
        for tool in "${paths[@]}"; do
            copy_with_libs "$root" "$tool" "/usr/bin/$(basename "$tool")"
        done
        ln -s busybox "$root/usr/bin/sh"
        mkdir -p "$root/tmp" "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/etc"
        chmod 1777 "$root/tmp"
        echo 'root:x:0:0:root:/:/usr/bin/sh' >"$root/etc/passwd"
        # mkfs.ext4 reads its defaults from here.
        [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/"
        image_archive_from_dir "$root" "roam.local/roam:$key" "$out" '["/roam-csi"]'
        rm -rf "$root"
        # Each build of the binaries makes a new image; keep only the newest.
        find "$cache" -maxdepth 1 -name 'roam-*.tar' ! -path "$out" -delete
    fi
    echo "roam.local/roam:$key $out"
}

# A sidecar image: one pinned binary from .tools/bin as the entrypoint.
build_sidecar() {
    local name="$1" bin="$tools_bin/$1" key out root
    [[ -x "$bin" ]] || die "missing $bin: run 'make tools' first"
    key="$(key_of "$(readlink -f "$bin")")"
    out="$cache/$name-$key.tar"
    if [[ ! -f "$out" ]]; then
        root="$(mktemp -d)"
        copy_with_libs "$root" "$(readlink -f "$bin")" "/$name"
        mkdir -p "$root/tmp"
        chmod 1777 "$root/tmp"
        image_archive_from_dir "$root" "roam.local/$name:$key" "$out" "[\"/$name\"]"
        rm -rf "$root"
    fi
    echo "roam.local/$name:$key $out"
}

build_roam
if ((sidecars)); then
    build_sidecar csi-provisioner
    build_sidecar csi-attacher
    build_sidecar csi-resizer
    build_sidecar csi-snapshotter
    build_sidecar snapshot-controller
fi

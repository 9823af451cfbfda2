#!/usr/bin/env bash
# Builds the images every node of the local cluster needs, without a registry:
#   roam.local/pause:1.0      the pod sandbox (e2e/images/pause.c, gcc -static)
#   roam.local/busybox:1.35   a shell and coreutils for tests (Debian's busybox-static)
# Each is a docker-archive tarball cached under ${ROAM_CACHE}/images/, keyed by
# a hash of its inputs, so a warm run only prints the paths (one per line).
#
#   e2e/images/build.sh            build if needed, print the tarball paths
#   e2e/images/build.sh --refs     print the image references instead
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/images/lib-archive.sh
source "$here/lib-archive.sh"

PAUSE_IMAGE="roam.local/pause:1.0"
BUSYBOX_IMAGE="roam.local/busybox:1.35"

if [[ "${1:-}" == "--refs" ]]; then
    printf '%s\n%s\n' "$PAUSE_IMAGE" "$BUSYBOX_IMAGE"
    exit 0
fi

cache="${ROAM_CACHE:-$HOME/.cache/roam}/images"
mkdir -p "$cache"

# The hash of everything that goes into an image names its tarball.
input_key() {
    { cat "$@"; cat "$here/lib-archive.sh"; } | sha256sum | cut -c1-16
}

build_pause() {
    local key out
    key="$(input_key "$here/pause.c" "$(command -v gcc)")"
    out="$cache/pause-$key.tar"
    if [[ ! -f "$out" ]]; then
        local root
        root="$(mktemp -d)"
        gcc -static -O2 -Wall -Wextra -o "$root/pause" "$here/pause.c"
        strip "$root/pause"
        image_archive_from_dir "$root" "$PAUSE_IMAGE" "$out" '["/pause"]'
        rm -rf "$root"
    fi
    echo "$out"
}

build_busybox() {
    local busybox key out
    busybox="$(command -v busybox || true)"
    # ldd fails on a static executable ("not a dynamic executable").
    if [[ -z "$busybox" ]] || ldd "$busybox" >/dev/null 2>&1; then
        echo "build.sh: a static busybox is needed (Debian: apt-get install busybox-static)" >&2
        return 1
    fi
    key="$(input_key "$busybox")"
    out="$cache/busybox-$key.tar"
    if [[ ! -f "$out" ]]; then
        local root applet
        root="$(mktemp -d)"
        mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/proc" "$root/sys" "$root/dev"
        chmod 1777 "$root/tmp"
        cp "$busybox" "$root/bin/busybox"
        for applet in $("$busybox" --list); do
            [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
        done
        echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
        echo 'root:x:0:' >"$root/etc/group"
        image_archive_from_dir "$root" "$BUSYBOX_IMAGE" "$out" 'null' '["/bin/sh"]'
        rm -rf "$root"
    fi
    echo "$out"
}

build_pause
build_busybox

#!/usr/bin/env bash
# Builds a kind node image from the pinned tools, with no registry and no
# Docker engine, into podman's image store, and prints its reference.
#
#   e2e/kind/node-image.sh          build unless cached; print the reference
#   e2e/kind/node-image.sh --ref    print the reference only
#
# `kind build node-image` cannot run here: it pulls a base image, etcd,
# CoreDNS, pause, kindnetd and local-path images from registries, and drives
# `docker` directly. So the image is assembled from parts we have:
#
#   1. a Debian bookworm root filesystem (debootstrap): systemd, Debian's
#      containerd, runc and CNI plugins, iptables, the mount tools; cached as
#      a tarball keyed by its package list;
#   2. kubeadm, kubelet and kubectl from the pinned Kubernetes build
#      (e2e/tools/install.sh kubernetes kubeadm), /kind/version, and the
#      entrypoint and units in e2e/kind/node/ (what kind expects of a node:
#      systemd as PID 1 that logs "Reached target Multi-User System",
#      containerd on /run/containerd/containerd.sock, a kubeadm-driven kubelet);
#   3. the images kubeadm runs, preloaded into the image's containerd under
#      roam.local/ (e2e/kind/cluster-local.yaml sets kubeadm's imageRepository
#      to it): kube-apiserver, kube-controller-manager, kube-scheduler and
#      kube-proxy at KUBERNETES_VERSION, etcd:3.6.5-0, coredns:COREDNS_VERSION,
#      pause:PAUSE_VERSION. Each is a docker-archive (e2e/images/lib-archive.sh)
#      imported by a containerd started for the purpose with its root in the
#      image's /var/lib/containerd. kind puts /var on a volume, which podman
#      fills from the image on first use, so the node's containerd finds them.
#
# The reference is roam.local/kind-node:<KUBERNETES_VERSION>-<key>, the key a
# hash of every input (versions, tool stamps, the files in e2e/kind/node/,
# this script), so a changed input builds a new image and an unchanged one is
# found in podman's store. Older roam.local/kind-node images are removed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=e2e/tools/versions.env
source "$repo/e2e/tools/versions.env"
# shellcheck source=e2e/images/lib-archive.sh
source "$repo/e2e/images/lib-archive.sh"
cache="${ROAM_CACHE:-$HOME/.cache/roam}"
tools="${ROAM_TOOLS:-$repo/.tools}/bin"
mirror="${ROAM_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf 'node-image: %s\n' "$*" >&2; }
die() {
    echo "node-image.sh: $*" >&2
    exit 1
}

# What the node runs besides the Kubernetes binaries. kubeadm's preflight
# wants conntrack, ip, iptables, mount, nsenter (errors) and ebtables,
# ethtool, socat, tc (warnings); kind itself calls bash, cat, cp, mkdir,
# ctr and `containerd config dump`.
NODE_PACKAGES="systemd systemd-sysv dbus containerd runc containernetworking-plugins iptables nftables ebtables conntrack iproute2 ethtool socat mount util-linux kmod procps ca-certificates e2fsprogs"

# The kube-proxy image carries iptables (Debian's nft variant, the same as the
# node's, so both see one rule set) and conntrack, which it calls.
PROXY_TOOLS=(xtables-nft-multi conntrack)

etcd_tag=${ETCD_VERSION#v}-0
base_key="$(printf '%s\n' bookworm "$NODE_PACKAGES" | sha256sum | cut -c1-16)"
base_tar="$cache/kind-node/base-$base_key.tar"

stamp_of() { cat "$cache/$1/stamp" 2>/dev/null || echo "$1 missing"; }

image_key() {
    {
        printf '%s\n' "$base_key" "$KUBERNETES_VERSION" "$ETCD_VERSION" "$COREDNS_VERSION" "$PAUSE_VERSION"
        stamp_of "kubernetes-$KUBERNETES_VERSION"
        stamp_of "kubeadm-$KUBERNETES_VERSION"
        stamp_of "etcd-$ETCD_VERSION"
        stamp_of "coredns-$COREDNS_VERSION"
        cat "$here"/node/* "${BASH_SOURCE[0]}" "$repo/e2e/images/lib-archive.sh" "$repo/e2e/images/pause.c"
    } | sha256sum | cut -c1-16
}

ref="roam.local/kind-node:$KUBERNETES_VERSION-$(image_key)"
if [[ "${1:-}" == --ref ]]; then
    echo "$ref"
    exit 0
fi

for tool in podman debootstrap containerd ctr gcc tar; do
    command -v "$tool" >/dev/null || die "$tool is needed (make kind-up installs it: e2e/tools/install.sh kind-apt apt)"
done

if podman image exists "$ref"; then
    log "$ref is built"
    echo "$ref"
    exit 0
fi

start=$SECONDS
work="$cache/kind-node/work"
ctrd_pid=""
cleanup() {
    if [[ -n "$ctrd_pid" ]]; then
        kill "$ctrd_pid" 2>/dev/null || true
        wait "$ctrd_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$work"
mkdir -p "$work"

# 1. The base root filesystem, once per package list.
if [[ ! -f "$base_tar" ]]; then
    log "debootstrap bookworm from $mirror (log: $cache/kind-node/debootstrap.log)"
    mkdir -p "$work/base"
    if ! debootstrap --variant=minbase --include="${NODE_PACKAGES// /,}" \
        bookworm "$work/base" "$mirror" >"$cache/kind-node/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/kind-node/debootstrap.log" >&2
        die "debootstrap failed (full log: $cache/kind-node/debootstrap.log)"
    fi
    # Package caches and lists are most of the size and of no use in a node.
    rm -rf "$work/base/var/cache/apt/archives/"*.deb "$work/base/var/lib/apt/lists/"*
    tar --numeric-owner --xattrs -C "$work/base" -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$work/base"
    log "base root filesystem cached: $base_tar ($((SECONDS - start))s)"
fi

for bin in kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns; do
    [[ -x "$tools/$bin" ]] || die "missing $tools/$bin: run e2e/tools/install.sh kubernetes kubeadm etcd coredns"
done

# Copies an executable and the shared libraries it loads into an image root.
copy_with_libs() {
    local root="$1" exe="$2" dest="$3" lib
    install -D -m 0755 "$exe" "$root$dest"
    while read -r lib; do
        [[ -e "$root$lib" ]] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
    done < <(ldd "$exe" 2>/dev/null | grep -oE '/[^ ]+' || true)
}

# 2. The images kubeadm runs, as docker-archives in $work/images.
mkdir -p "$work/images"
binary_image() { # NAME TAG BINARY DEST [ENTRYPOINT-JSON]
    local name=$1 tag=$2 bin=$3 dest=$4 entrypoint=${5:-null} root="$work/img-$1"
    mkdir -p "$root/tmp" "$root/etc"
    chmod 1777 "$root/tmp"
    install -D -m 0755 "$(readlink -f "$bin")" "$root$dest"
    echo 'root:x:0:0:root:/:/bin/false' >"$root/etc/passwd"
    if [[ $name == kube-proxy ]]; then
        local t path
        for t in "${PROXY_TOOLS[@]}"; do
            path="$(command -v "$t")" || die "host tool '$t' not found (Debian: iptables, conntrack)"
            copy_with_libs "$root" "$path" "/usr/sbin/$t"
        done
        for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
            ln -s xtables-nft-multi "$root/usr/sbin/$t"
        done
        # iptables loads its match and target extensions at run time.
        local xt
        xt="$(dirname "$(readlink -f "$(ldd "$(command -v xtables-nft-multi)" | grep -oE '/[^ ]*libxtables[^ ]*')")")/xtables"
        [[ -d "$xt" ]] || die "iptables extensions not found at $xt"
        mkdir -p "$root$xt"
        cp -a "$xt/." "$root$xt/"
    fi
    image_archive_from_dir "$root" "roam.local/$name:$tag" "$work/images/$name.tar" "$entrypoint"
    rm -rf "$root"
}
for c in kube-apiserver kube-controller-manager kube-scheduler; do
    # kubeadm's static pod manifests run them by name, from PATH.
    binary_image "$c" "$KUBERNETES_VERSION" "$tools/$c" "/usr/bin/$c"
done
# kubeadm's DaemonSet runs /usr/local/bin/kube-proxy.
binary_image kube-proxy "$KUBERNETES_VERSION" "$tools/kube-proxy" /usr/local/bin/kube-proxy
binary_image etcd "$etcd_tag" "$tools/etcd" /usr/bin/etcd
# kubeadm's CoreDNS Deployment passes only arguments: the image's entrypoint runs.
binary_image coredns "$COREDNS_VERSION" "$tools/coredns" /coredns '["/coredns"]'
gcc -static -O2 -Wall -Wextra -o "$work/pause" "$repo/e2e/images/pause.c"
strip "$work/pause"
binary_image pause "$PAUSE_VERSION" "$work/pause" /pause '["/pause"]'
log "component images written ($((SECONDS - start))s)"

# 3. The node's root filesystem.
root="$work/root"
mkdir -p "$root"
tar --numeric-owner --xattrs -C "$root" -xf "$base_tar"
for bin in kubeadm kubelet kubectl; do
    install -m 0755 "$(readlink -f "$tools/$bin")" "$root/usr/bin/$bin"
done
install -m 0755 "$here/node/entrypoint" "$root/usr/local/bin/entrypoint"
install -D -m 0644 "$here/node/containerd.toml" "$root/etc/containerd/config.toml"
install -m 0644 "$here/node/containerd.service" "$root/etc/systemd/system/containerd.service"
install -m 0644 "$here/node/kubelet.service" "$root/etc/systemd/system/kubelet.service"
install -m 0644 "$here/node/kubelet.slice" "$root/etc/systemd/system/kubelet.slice"
install -D -m 0644 "$here/node/sysctl.conf" "$root/etc/sysctl.d/10-roam-kind.conf"
mkdir -p "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/cni/net.d" "$root/kind"
ln -sfn /etc/systemd/system/containerd.service "$root/etc/systemd/system/multi-user.target.wants/containerd.service"
ln -sfn /etc/systemd/system/kubelet.service "$root/etc/systemd/system/multi-user.target.wants/kubelet.service"
# Units that have no job in a node container and only slow its start or fail.
for unit in getty.target systemd-timesyncd.service systemd-logind.service; do
    ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done
# kind reads the Kubernetes version of the node from here.
echo "$KUBERNETES_VERSION" >"$root/kind/version"
# The image carries no machine-id; the entrypoint makes one per node.
: >"$root/etc/machine-id"

# Preload: a containerd of our own, root in the image, socket in $work.
cat >"$work/containerd.toml" <<EOF
version = 2
root = "$root/var/lib/containerd"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd.sock"
EOF
containerd --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
ready=0
for _ in $(seq 1 100); do
    if ctr --address "$work/containerd.sock" version >/dev/null 2>&1; then
        ready=1
        break
    fi
    kill -0 "$ctrd_pid" 2>/dev/null || break
    sleep 0.1
done
((ready)) || {
    cat "$work/containerd.log" >&2
    die "containerd for preloading did not answer within 10 s"
}
for tar in "$work"/images/*.tar; do
    ctr --address "$work/containerd.sock" -n k8s.io images import --snapshotter overlayfs "$tar" >/dev/null ||
        die "importing $tar into the image's containerd failed"
done
kill "$ctrd_pid"
wait "$ctrd_pid" || true
ctrd_pid=""
log "images preloaded ($((SECONDS - start))s)"

# kind starts the container without a command: ENTRYPOINT and CMD run
# systemd through our entrypoint; systemd stops on SIGRTMIN+3.
tar --numeric-owner --xattrs -C "$root" -c . |
    podman import --quiet \
        --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
        --change 'ENV container=docker' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        - "$ref" >/dev/null
log "built $ref in $((SECONDS - start))s"

# Only the newest node image is kept (one in use by a cluster stays: podman
# refuses, and says so).
mapfile -t old < <(podman images --format '{{.Repository}}:{{.Tag}}')
for image in "${old[@]}"; do
    if [[ $image == roam.local/kind-node:* && $image != "$ref" ]]; then
        podman rmi "$image" >/dev/null || log "kept $image (in use)"
    fi
done
echo "$ref"

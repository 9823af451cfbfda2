#!/usr/bin/env bash
# `make kind-up`: the kind cluster of e2e/kind/run.sh on a machine without
# Docker or a registry (Debian 12, root): kind's podman provider, a node image
# built here from the pinned tools, and images of the pinned CSI sidecars.
# Leaves the cluster running with Roam installed, its DataCenters and
# StorageClass applied; `make kind-down` removes it.
#
#   1. tools: the pinned builds (e2e/tools/install.sh), plus kind, kubeadm,
#      CoreDNS, podman and debootstrap; each cached under ~/.cache/roam by
#      version, so a second run only links them;
#   2. podman: Debian's podman 4.3 starts no container until containers.conf
#      sets `default_ulimits = []` (root here lacks CAP_SYS_RESOURCE and cannot
#      raise the nofile limit podman asks for); kind mounts /lib/modules,
#      which this kernel (modules built in) does not have;
#   3. the node image (e2e/kind/node-image.sh, cached in podman's store);
#   4. e2e/kind/run.sh --install-only with cluster-local.yaml, the podman
#      provider and local sidecar images.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
begin=$SECONDS
log() { printf 'kind/up.sh [%3ds] %s\n' "$((SECONDS - begin))" "$*" >&2; }
die() {
    echo "kind/up.sh: $*" >&2
    exit 1
}
((EUID == 0)) || die "run as root (podman's kind provider runs privileged node containers)"

bash "$repo/e2e/tools/install.sh" apt kind-apt kubernetes kubeadm etcd coredns \
    external-provisioner external-attacher external-resizer external-snapshotter helm kind >&2

# containers.conf: add `default_ulimits = []` to its [containers] table,
# creating the file or the table when missing; leave it alone once set.
conf=/etc/containers/containers.conf
if ! grep -qE '^[[:space:]]*default_ulimits[[:space:]]*=[[:space:]]*\[\]' "$conf" 2>/dev/null; then
    grep -qE '^[[:space:]]*default_ulimits' "$conf" 2>/dev/null &&
        die "$conf sets default_ulimits to something else; podman here needs 'default_ulimits = []' under [containers]"
    mkdir -p "$(dirname "$conf")"
    if grep -qE '^\[containers\]' "$conf" 2>/dev/null; then
        sed -i '/^\[containers\]/a default_ulimits = []' "$conf"
    else
        printf '\n[containers]\n# Root here cannot raise rlimits (no CAP_SYS_RESOURCE): keep the defaults.\ndefault_ulimits = []\n' >>"$conf"
    fi
    log "podman: set default_ulimits = [] in $conf"
fi
mkdir -p /lib/modules

node_image="$(bash "$here/node-image.sh")"
log "node image $node_image"

KIND_EXPERIMENTAL_PROVIDER=podman KIND_NODE_IMAGE="$node_image" \
    KIND_CONFIG="$here/cluster-local.yaml" ROAM_KIND_SIDECARS=local \
    bash "$here/run.sh" --install-only
log "kind cluster up; KUBECONFIG=${ROAM_KIND_KUBECONFIG:-${ROAM_CLUSTER_DIR:-$repo/.cluster}/kind.kubeconfig}"

#!/usr/bin/env bash
# Roam on a kind cluster: for any Linux machine with Docker or podman, kind,
# kubectl, helm and a Rust toolchain.
#
#   e2e/kind/run.sh                 create (or reuse) the cluster, install
#                                   Roam, run the end-to-end suite (make e2e)
#   e2e/kind/run.sh --install-only  the same without the suite
#   e2e/kind/run.sh delete          delete the cluster
#
# Steps, each stopping the script with a message when it fails:
#   1. /dev/loop0..N-1 device nodes on the host (root only): a kind node sees
#      only the loop device nodes that existed when it started (kind#1248),
#      and the node plugin attaches one loop device per staged volume.
#   2. `kind create cluster` from $KIND_CONFIG (one control plane, three
#      workers in zones dc-a, dc-b, dc-c) and node image $KIND_NODE_IMAGE
#      (pinned by digest in e2e/tools/versions.env). When the config
#      disables kind's CNI (cluster-local.yaml), each node gets a bridge CNI
#      config for its pod CIDR and a route to every other node's pod CIDR.
#   3. Images, loaded with `kind load image-archive` (docker-archives, so
#      neither Docker nor a registry is needed): the test images
#      (e2e/images/build.sh) and Roam's image (e2e/images/roam-image.sh
#      after a cargo build). The CSI sidecars are the upstream images from
#      registry.k8s.io (the chart's defaults), pulled by the nodes; with
#      ROAM_KIND_SIDECARS=local, images of the pinned builds in .tools/bin
#      are loaded instead (for machines without a registry).
#   4. The VolumeSnapshot CRDs and external-snapshotter's snapshot-controller
#      (e2e/cluster/install-snapshots.sh; the CRDs come from `e2e/tools/
#      install.sh external-snapshotter`, the controller's image like the
#      sidecars'), then `helm upgrade --install` of charts/roam into
#      roam-system; waits for the operator, the CSI controller and a node
#      plugin on every worker.
#   5. The example DataCenters and StorageClass (crds/examples/); waits until
#      each DataCenter counts its node's storage system.
#   6. `make e2e` with KUBECONFIG set to the kind cluster (skipped with
#      --install-only).
#
# Environment:
#   KIND_CLUSTER            cluster name (roam)
#   KIND_CONFIG             kind config (e2e/kind/cluster.yaml)
#   KIND_NODE_IMAGE         node image (KIND_NODE_IMAGE_UPSTREAM of versions.env)
#   KIND_EXPERIMENTAL_PROVIDER=podman   kind's podman provider (default: docker)
#   ROAM_KIND_KUBECONFIG    where the kubeconfig goes ($ROAM_CLUSTER_DIR/kind.kubeconfig)
#   ROAM_KIND_SIDECARS      upstream (default) or local
#   ROAM_KIND_LOOP_DEVICES  loop device nodes to make sure of (64)
#   ROAM_PROFILE            cargo profile of Roam's image (debug, as make build)
#   ROAM_READY_TIMEOUT      seconds to wait for each step (300)
#   HELM_EXTRA_ARGS         more arguments for helm
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=e2e/tools/versions.env
source "$repo/e2e/tools/versions.env"
cluster="${KIND_CLUSTER:-roam}"
config="${KIND_CONFIG:-$repo/e2e/kind/cluster.yaml}"
node_image="${KIND_NODE_IMAGE:-$KIND_NODE_IMAGE_UPSTREAM}"
kubeconfig="${ROAM_KIND_KUBECONFIG:-${ROAM_CLUSTER_DIR:-$repo/.cluster}/kind.kubeconfig}"
sidecars="${ROAM_KIND_SIDECARS:-upstream}"
loop_devices="${ROAM_KIND_LOOP_DEVICES:-64}"
profile="${ROAM_PROFILE:-debug}"
timeout="${ROAM_READY_TIMEOUT:-300}"
ns=roam-system
# The pinned tools, when `make tools` built them, come first.
export PATH="$repo/.tools/bin:$PATH"

begin=$SECONDS
log() { printf 'kind/run.sh [%3ds] %s\n' "$((SECONDS - begin))" "$*" >&2; }
die() {
    echo "kind/run.sh: $*" >&2
    exit 1
}

mode=e2e
case "${1:-}" in
"") ;;
--install-only) mode=install ;;
delete) mode=delete ;;
*) die "unknown argument '$1' (usage: run.sh [--install-only|delete])" ;;
esac

engine=docker
[[ "${KIND_EXPERIMENTAL_PROVIDER:-}" == podman ]] && engine=podman
for tool in kind kubectl "$engine"; do
    command -v "$tool" >/dev/null || die "$tool is needed (kind runs its nodes as $engine containers)"
done

if [[ $mode == delete ]]; then
    kind delete cluster --name "$cluster"
    rm -f "$kubeconfig"
    exit 0
fi
for tool in helm cargo; do
    command -v "$tool" >/dev/null || die "$tool is needed (helm installs charts/roam; cargo builds Roam's image)"
done
case $sidecars in
upstream | local) ;;
*) die "ROAM_KIND_SIDECARS must be upstream or local, not '$sidecars'" ;;
esac

ensure_loop_device_nodes() {
    local i missing=()
    for ((i = 0; i < loop_devices; i++)); do
        [[ -b /dev/loop$i ]] || missing+=("$i")
    done
    ((${#missing[@]} == 0)) && return 0
    if ((EUID != 0)); then
        die "${#missing[@]} of /dev/loop0..$((loop_devices - 1)) are missing, and kind nodes see only the loop device nodes that exist when they start (kind#1248). Create them, then run this again:
  for i in \$(seq 0 $((loop_devices - 1))); do [ -b /dev/loop\$i ] || sudo mknod -m 0660 /dev/loop\$i b 7 \$i; done"
    fi
    [[ -c /dev/loop-control ]] || die "/dev/loop-control is missing: the kernel has no loop driver"
    for i in "${missing[@]}"; do
        mknod -m 0660 "/dev/loop$i" b 7 "$i"
        chgrp disk "/dev/loop$i" 2>/dev/null || true
    done
    log "made ${#missing[@]} loop device nodes (/dev/loop0..$((loop_devices - 1)) exist)"
}

# Bridge networking for a cluster without kind's CNI: each node's pods on a
# bridge with the node's pod CIDR (host-local addresses), and on every node
# a route to each other node's pod CIDR through that node, so pods reach
# each other by their own addresses, without NAT or an overlay.
setup_bridge_network() {
    local deadline=$((SECONDS + timeout)) listing
    # The controller-manager assigns pod CIDRs as nodes register.
    while :; do
        listing="$(kubectl --kubeconfig "$kubeconfig" get nodes -o \
            jsonpath='{range .items[*]}{.metadata.name} {.status.addresses[?(@.type=="InternalIP")].address} {.spec.podCIDR}{"\n"}{end}')"
        local want have
        want="$(kind get nodes --name "$cluster" | wc -l)"
        have="$(awk 'NF == 3' <<<"$listing" | wc -l)"
        ((have == want)) && break
        ((SECONDS < deadline)) || die "after ${timeout}s, $have of $want nodes have an address and a pod CIDR:
$listing"
        sleep 2
    done
    local name cidr other other_ip other_cidr
    while read -r name _ cidr; do
        "$engine" exec -i "$name" sh -c 'cat >/etc/cni/net.d/10-roam-bridge.conflist' <<EOF
{
  "cniVersion": "0.4.0",
  "name": "roam-bridge",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$cidr" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
        while read -r other other_ip other_cidr; do
            [[ $other == "$name" ]] && continue
            "$engine" exec "$name" ip route replace "$other_cidr" via "$other_ip"
        done <<<"$listing"
    done <<<"$listing"
    log "pod network: a bridge per node, routes between them"
}

# 1, 2: the cluster.
mkdir -p "$(dirname "$kubeconfig")"
clusters="$(kind get clusters)" || die "kind get clusters failed (is $engine usable? try: $engine ps)"
if grep -qx "$cluster" <<<"$clusters"; then
    kind get kubeconfig --name "$cluster" >"$kubeconfig"
    log "reusing kind cluster $cluster"
else
    ensure_loop_device_nodes
    log "creating kind cluster $cluster from $node_image ($config)"
    wait_args=(--wait "${timeout}s")
    # Without a CNI no node becomes Ready until setup_bridge_network ran.
    grep -q 'disableDefaultCNI: true' "$config" && wait_args=()
    kind create cluster --name "$cluster" --image "$node_image" --config "$config" \
        --kubeconfig "$kubeconfig" "${wait_args[@]}"
    log "cluster created"
fi
if grep -q 'disableDefaultCNI: true' "$config"; then
    setup_bridge_network
fi
kubectl --kubeconfig "$kubeconfig" wait node --all --for=condition=Ready --timeout "${timeout}s" >/dev/null
log "nodes Ready"

# 3: images.
test_images="$("$repo/e2e/images/build.sh")"
if [[ $profile == release ]]; then
    cargo build --release -p roam-operator -p roam-csi --bins --manifest-path "$repo/Cargo.toml"
else
    cargo build -p roam-operator -p roam-csi --bins --manifest-path "$repo/Cargo.toml"
fi
image_args=()
[[ $sidecars == upstream ]] && image_args=(--no-sidecars)
roam_images="$(bash "$repo/e2e/images/roam-image.sh" "$profile" "${image_args[@]}")"
declare -A ref
archives=()
while read -r tar; do archives+=("$tar"); done <<<"$test_images"
while read -r image tar; do
    ref[${image%%:*}]="$image"
    archives+=("$tar")
done <<<"$roam_images"
for tar in "${archives[@]}"; do
    kind load image-archive --name "$cluster" "$tar"
done
log "images loaded: ${ref[*]}"

# 4: snapshots' CRDs and controller (the chart's VolumeSnapshotClass needs
# the CRDs), then the chart.
snapshot_controller="registry.k8s.io/sig-storage/snapshot-controller:$EXTERNAL_SNAPSHOTTER_VERSION"
[[ $sidecars == local ]] && snapshot_controller="${ref[roam.local/snapshot-controller]}"
KUBECONFIG="$kubeconfig" ROAM_READY_TIMEOUT="$timeout" \
    bash "$repo/e2e/cluster/install-snapshots.sh" "$snapshot_controller" ||
    die "the VolumeSnapshot CRDs or the snapshot-controller could not be installed"
log "VolumeSnapshot CRDs and snapshot-controller installed"

roam_image="${ref[roam.local/roam]}"
helm_args=(
    --set image.repository="${roam_image%%:*}"
    --set image.tag="${roam_image#*:}"
    --set image.pullPolicy=IfNotPresent
    --set csi.images.roamCsi="$roam_image"
)
if [[ $sidecars == local ]]; then
    helm_args+=(
        --set csi.images.provisioner="${ref[roam.local/csi-provisioner]}"
        --set csi.images.attacher="${ref[roam.local/csi-attacher]}"
        --set csi.images.resizer="${ref[roam.local/csi-resizer]}"
        --set csi.images.snapshotter="${ref[roam.local/csi-snapshotter]}"
    )
fi
# shellcheck disable=SC2086 # HELM_EXTRA_ARGS is split into words on purpose
helm upgrade --install roam "$repo/charts/roam" --kubeconfig "$kubeconfig" \
    --namespace "$ns" --create-namespace --wait --timeout "${timeout}s" \
    "${helm_args[@]}" ${HELM_EXTRA_ARGS:-} >/dev/null
kubectl --kubeconfig "$kubeconfig" -n "$ns" rollout status deployment --timeout "${timeout}s" >/dev/null
kubectl --kubeconfig "$kubeconfig" -n "$ns" rollout status daemonset --timeout "${timeout}s" >/dev/null
log "Roam installed in $ns (operator, CSI controller, a node plugin per worker)"

# 5: the data centers and the storage class.
kubectl --kubeconfig "$kubeconfig" apply -f "$repo/crds/examples/datacenters.yaml" \
    -f "$repo/crds/examples/storageclass.yaml" >/dev/null
for dc in dc-a dc-b dc-c; do
    kubectl --kubeconfig "$kubeconfig" wait "datacenter/$dc" \
        --for=jsonpath='{.status.readyStorageSystems}'=1 --timeout "${timeout}s" >/dev/null
done
kubectl --kubeconfig "$kubeconfig" get nodes -L topology.kubernetes.io/zone
kubectl --kubeconfig "$kubeconfig" get datacenters,storageclasses
log "DataCenters dc-a, dc-b, dc-c each have their storage system; kubeconfig: $kubeconfig"

# 6: the suite.
if [[ $mode == e2e ]]; then
    KUBECONFIG="$kubeconfig" make -C "$repo" e2e
fi

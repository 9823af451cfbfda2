#!/usr/bin/env bash
# Runs Roam's end-to-end suite on a kind cluster, for machines with Docker.
#
#   e2e/kind/run.sh          create (or reuse) the cluster, load the images,
#                            install the chart, run `make e2e` against it
#   e2e/kind/run.sh delete   delete the cluster
#
# Steps:
#   1. `kind create cluster` from e2e/kind/cluster.yaml (one control plane,
#      three workers labelled topology.kubernetes.io/zone=dc-a|dc-b|dc-c),
#      node image $KIND_NODE_IMAGE (a Kubernetes 1.34 kindest/node).
#   2. Build the images: the test images (e2e/images/build.sh, docker-archive
#      tarballs) and Roam's own images (e2e/images/roam-image.sh release,
#      after a release build); `docker load` each and
#      `kind load docker-image` it into every node. Nothing is pulled: pods use
#      imagePullPolicy IfNotPresent or Never.
#   3. `helm upgrade --install` the chart charts/roam into roam-system, when the
#      chart exists.
#   4. `make e2e` with KUBECONFIG pointing at the kind cluster.
#
# Environment: KIND_CLUSTER (default roam), KIND_NODE_IMAGE (default
# kindest/node:v1.34.0), ROAM_KIND_KUBECONFIG (default
# $ROAM_CLUSTER_DIR/kind.kubeconfig), HELM_EXTRA_ARGS.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_CLUSTER:-roam}"
node_image="${KIND_NODE_IMAGE:-kindest/node:v1.34.0}"
kubeconfig="${ROAM_KIND_KUBECONFIG:-${ROAM_CLUSTER_DIR:-$repo/.cluster}/kind.kubeconfig}"
export PATH="$repo/.tools/bin:$PATH"

die() {
    echo "kind/run.sh: $*" >&2
    exit 1
}

for tool in kind docker kubectl; do
    command -v "$tool" >/dev/null || die "$tool is needed (kind runs its nodes as Docker containers)"
done

if [[ "${1:-}" == delete ]]; then
    kind delete cluster --name "$cluster"
    exit 0
fi

mkdir -p "$(dirname "$kubeconfig")"
if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --image "$node_image" \
        --config "$repo/e2e/kind/cluster.yaml" --kubeconfig "$kubeconfig" --wait 120s
else
    kind get kubeconfig --name "$cluster" >"$kubeconfig"
fi

# Loads a docker-archive tarball into Docker, then into every kind node.
load_archive() {
    local tar="$1" ref
    ref="$(docker load -i "$tar" | sed -n 's/^Loaded image: //p' | tail -1)"
    [[ -n "$ref" ]] || die "docker load -i $tar printed no image name"
    kind load docker-image --name "$cluster" "$ref"
}

mapfile -t archives < <("$repo/e2e/images/build.sh")
# Roam's binaries first (the image script packs what cargo built).
cargo build --release --bins --manifest-path "$repo/Cargo.toml"
# It prints "<ref> <tarball>" per image; the refs go to the chart.
declare -A ref
while read -r image tar; do
    ref[${image%%:*}]="$image"
    archives+=("$tar")
done < <(bash "$repo/e2e/images/roam-image.sh" release)
for tar in "${archives[@]}"; do
    load_archive "$tar"
done

command -v helm >/dev/null || die "helm is needed to install charts/roam (make tools builds it)"
roam_image="${ref[roam.local/roam]}"
# shellcheck disable=SC2086
helm upgrade --install roam "$repo/charts/roam" --kubeconfig "$kubeconfig" \
    --namespace roam-system --create-namespace --wait --timeout 5m \
    --set image.repository="${roam_image%%:*}" \
    --set image.tag="${roam_image#*:}" \
    --set csi.images.roamCsi="$roam_image" \
    --set csi.images.provisioner="${ref[roam.local/csi-provisioner]}" \
    --set csi.images.attacher="${ref[roam.local/csi-attacher]}" \
    --set csi.images.resizer="${ref[roam.local/csi-resizer]}" \
    ${HELM_EXTRA_ARGS:-}

KUBECONFIG="$kubeconfig" make -C "$repo" e2e

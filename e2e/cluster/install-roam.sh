#!/usr/bin/env bash
# Installs Roam into the cluster $KUBECONFIG points at (default: the local
# cluster's), the way a user would: images onto the nodes (there is no
# registry), the VolumeSnapshot CRDs and snapshot-controller
# (install-snapshots.sh: the chart's VolumeSnapshotClass needs the CRDs),
# `helm upgrade --install` of charts/roam, then the examples from
# crds/examples/. Waits until the operator, the CSI controller and a node
# plugin on every node are running, and the example volumes are Ready.
# Running it again upgrades in place.
#
#   e2e/cluster/install-roam.sh [--no-examples]
#
# Environment:
#   ROAM_PROFILE        cargo profile whose binaries go into the image (debug)
#   ROAM_NAMESPACE      namespace of Roam's components (roam-system)
#   ROAM_READY_TIMEOUT  seconds to wait for each step (180)
#   ROAM_HELM_ARGS      more arguments for helm (e.g. --set csi.storageTls.enabled=false)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
ROAM_LOG_TAG=install

profile="${ROAM_PROFILE:-debug}"
ns="${ROAM_NAMESPACE:-roam-system}"
timeout="${ROAM_READY_TIMEOUT:-180}"
export KUBECONFIG="${KUBECONFIG:-$ROAM_CLUSTER_DIR/kubeconfig}"
examples=1
[[ "${1:-}" == "--no-examples" ]] && examples=0

# When a step times out, show why: the state of Roam's objects, the events
# (a replica that could not be created says why there), the components' last
# log lines and the free space of the nodes' disks.
report_failure() {
    log "not ready after ${timeout}s; the cluster's state follows"
    kubectl get nodes,datacenters,virtualvolumes,copyvolumegroups,pvc,pods -A -o wide || true
    kubectl get events -A --field-selector type=Warning --sort-by=.lastTimestamp | tail -n 30 || true
    kubectl describe virtualvolumes -A | grep -A4 -E '^Name:|Type: +Ready' || true
    local pod
    for pod in $(kubectl -n "$ns" get pods -o name 2>/dev/null); do
        echo "--- $pod"
        kubectl -n "$ns" logs "$pod" --all-containers --tail=25 --prefix || true
    done
    df -h "$ROAM_CLUSTER_DIR" || true
}
trap report_failure ERR

begin=$SECONDS
declare -A ref
tarballs=()
while read -r image tarball; do
    ref[${image%%:*}]="$image"
    tarballs+=("$tarball")
done < <("$repo_root/e2e/images/roam-image.sh" "$profile")
"$here/node-images.sh" "${tarballs[@]}" >/dev/null
log "images imported: ${ref[*]} ($((SECONDS - begin))s)"

ROAM_READY_TIMEOUT="$timeout" "$here/install-snapshots.sh" "${ref[roam.local/snapshot-controller]}"

roam_image="${ref[roam.local/roam]}"
# shellcheck disable=SC2086 # ROAM_HELM_ARGS is split into words on purpose
helm upgrade --install roam "$repo_root/charts/roam" \
    --namespace "$ns" --create-namespace \
    --set image.repository="${roam_image%%:*}" \
    --set image.tag="${roam_image#*:}" \
    --set image.pullPolicy=IfNotPresent \
    --set csi.images.roamCsi="$roam_image" \
    --set csi.images.provisioner="${ref[roam.local/csi-provisioner]}" \
    --set csi.images.attacher="${ref[roam.local/csi-attacher]}" \
    --set csi.images.resizer="${ref[roam.local/csi-resizer]}" \
    --set csi.images.snapshotter="${ref[roam.local/csi-snapshotter]}" \
    ${ROAM_HELM_ARGS:-} \
    --wait --timeout "${timeout}s" >/dev/null
log "chart installed in namespace $ns ($((SECONDS - begin))s)"

kubectl -n "$ns" rollout status deployment --timeout "${timeout}s" >/dev/null
kubectl -n "$ns" rollout status daemonset --timeout "${timeout}s" >/dev/null
log "operator, CSI controller and node plugins running ($((SECONDS - begin))s)"

if ((examples)); then
    kubectl apply -f "$repo_root/crds/examples/" >/dev/null
    # Only the examples' own volumes: others in the cluster are not ours to judge.
    volumes=()
    for f in "$repo_root"/crds/examples/virtualvolume-*.yaml; do volumes+=(-f "$f"); done
    kubectl wait "${volumes[@]}" --for=jsonpath='{.status.phase}'=Ready \
        --timeout "${timeout}s" >/dev/null
    log "example volumes Ready ($((SECONDS - begin))s)"
    # The example pod mounts a PVC on the example class: provisioning, the
    # log-in and the node plugin's mount, all on the way to Ready.
    kubectl wait pod/guestbook --for=condition=Ready --timeout "${timeout}s" >/dev/null
    log "example pod running on a Roam volume ($((SECONDS - begin))s)"
    kubectl get datacenters,virtualvolumes,copyvolumegroups,pvc,pods
fi

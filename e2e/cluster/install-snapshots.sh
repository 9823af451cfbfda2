#!/usr/bin/env bash
# The cluster's part of CSI snapshots, which no CSI driver's chart installs:
# the snapshot.storage.k8s.io/v1 CRDs (VolumeSnapshotClass,
# VolumeSnapshotContent, VolumeSnapshot) and the snapshot-controller, both
# of external-snapshotter at EXTERNAL_SNAPSHOTTER_VERSION. The CRDs are the
# release's own client/config/crd/ files, which `e2e/tools/install.sh
# external-snapshotter` (part of `make tools`) links as .tools/snapshot-crds;
# the controller runs from e2e/cluster/snapshot-controller.yaml in
# kube-system. Running it again changes nothing.
#
#   e2e/cluster/install-snapshots.sh --crds-only   only the CRDs (a control
#                                                  plane without nodes)
#   e2e/cluster/install-snapshots.sh IMAGE         the CRDs and the controller
#                                                  from IMAGE, present on the
#                                                  nodes or pullable
#
# Environment:
#   KUBECONFIG          the cluster (default: the local cluster's)
#   ROAM_READY_TIMEOUT  seconds to wait for the CRDs, then the controller (180)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
ROAM_LOG_TAG=snapshots

export KUBECONFIG="${KUBECONFIG:-$ROAM_CLUSTER_DIR/kubeconfig}"
timeout="${ROAM_READY_TIMEOUT:-180}"
crd_dir="$ROAM_TOOLS/snapshot-crds"
case "${1:-}" in
"" | -h | --help)
    sed -n '11,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
--crds-only) image="" ;;
*) image="$1" ;;
esac

begin=$SECONDS
crds=(volumesnapshotclasses volumesnapshotcontents volumesnapshots)
files=()
for c in "${crds[@]}"; do
    f="$crd_dir/snapshot.storage.k8s.io_$c.yaml"
    [[ -f "$f" ]] || die "missing $f (run: e2e/tools/install.sh external-snapshotter)"
    files+=(-f "$f")
done
# Server-side: the CRDs are large, and a client-side apply would store each
# whole in an annotation.
kubectl apply --server-side --force-conflicts --field-manager=roam-cluster "${files[@]}" >/dev/null
names=()
for c in "${crds[@]}"; do names+=("crd/$c.snapshot.storage.k8s.io"); done
kubectl wait --for=condition=Established --timeout "${timeout}s" "${names[@]}" >/dev/null
log "VolumeSnapshot CRDs established ($((SECONDS - begin))s)"
[[ -n "$image" ]] || exit 0

sed "s|SNAPSHOT_CONTROLLER_IMAGE|$image|" "$here/snapshot-controller.yaml" | kubectl apply -f - >/dev/null
if ! kubectl -n kube-system rollout status deployment/snapshot-controller --timeout "${timeout}s" >/dev/null; then
    kubectl -n kube-system get pods -l app.kubernetes.io/name=snapshot-controller -o wide || true
    kubectl -n kube-system logs -l app.kubernetes.io/name=snapshot-controller --tail=25 --prefix || true
    die "snapshot-controller not running after ${timeout}s"
fi
log "snapshot-controller running in kube-system ($((SECONDS - begin))s)"

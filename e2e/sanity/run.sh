#!/usr/bin/env bash
# csi-sanity (the upstream CSI conformance suite) against roam-csi, on one node,
# in mount mode and in block mode.
#
# Usage: e2e/sanity/run.sh            (as root: FUSE, loop devices, mounts)
#
# What it starts, all on 127.0.0.1, and stops again on exit:
#   - the control plane (e2e/cluster/control-plane.sh start) with Roam's CRDs
#   - a DataCenter "sanity-dc" and a Node "sanity-node" in it (no kubelet)
#   - the operator (target/debug/roam-operator)
#   - roam-csi node with its storage system in-process (it annotates its Node
#     with the storage endpoint) and roam-csi controller, each on a unix socket
# Then csi-sanity runs twice; JUnit reports go to $ROAM_SANITY_OUT
# (default target/sanity/junit-{mount,block}.xml). Skipped specs and why:
# docs/csi-conformance.md.
#
# Environment: ROAM_CLUSTER_DIR (control plane state, default <repo>/.cluster),
# ROAM_SANITY_KEEP=1 keeps the work directory for inspection.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export ROAM_CLUSTER_DIR=${ROAM_CLUSTER_DIR:-$repo/.cluster}
tools=$repo/.tools/bin
export PATH=$tools:$PATH
out=${ROAM_SANITY_OUT:-$repo/target/sanity}
mkdir -p "$out"
work=$(mktemp -d /tmp/roam-sanity.XXXXXX)
pids=()

log() { echo "sanity: $*" >&2; }

cleanup() {
	local rc=$?
	set +e
	local i
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill -TERM "${pids[$i]}" 2>/dev/null
		wait "${pids[$i]}" 2>/dev/null
	done
	# Anything csi-sanity or a failed plugin left mounted under the work dir.
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
	losetup -a 2>/dev/null | grep -F "$work" | cut -d: -f1 | while read -r d; do
		losetup -d "$d" 2>/dev/null
	done
	# The objects this run made in the shared control plane go too. Their real
	# volumes lived in the work directory, so the finalizers have nothing left
	# to clean up once the operator is gone.
	if [[ -n ${namespace:-} ]]; then
		kubectl -n "$namespace" get virtualvolumes -o name 2>/dev/null | while read -r vv; do
			kubectl -n "$namespace" patch "$vv" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
		done
		kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1
		kubectl delete node "$node" --wait=false >/dev/null 2>&1
		kubectl delete datacenter "$dc" --wait=false >/dev/null 2>&1
	fi
	# The control plane is shared with the other test suites (as roam-e2e
	# does): it is left running; stop it with e2e/cluster/control-plane.sh stop.
	if [[ $rc != 0 ]]; then
		for f in "$work"/*.log; do
			[[ -f $f ]] || continue
			log "last lines of $f:"
			tail -n 40 "$f" >&2
		done
	fi
	if [[ ${ROAM_SANITY_KEEP:-0} == 1 || $rc != 0 ]]; then
		log "work directory kept: $work (logs in $work/*.log)"
	else
		rm -rf "$work"
	fi
	exit $rc
}
trap cleanup EXIT

for tool in csi-sanity kubectl; do
	[[ -x $tools/$tool ]] || { log "missing $tools/$tool: run e2e/tools/install.sh"; exit 1; }
done

log "building roam-csi and roam-operator"
cargo build -q -p roam-csi -p roam-operator --bins
bin=$repo/target/debug
[[ -x $bin/roam-operator ]] || { log "target/debug/roam-operator was not built"; exit 1; }

if ! bash e2e/cluster/control-plane.sh status >/dev/null 2>&1; then
	log "starting the control plane"
	bash e2e/cluster/control-plane.sh start
fi
export KUBECONFIG=$ROAM_CLUSTER_DIR/kubeconfig
kubectl apply -f charts/roam/crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
	crd/datacenters.roam.dev crd/virtualvolumes.roam.dev crd/copyvolumegroups.roam.dev >/dev/null
# Its own namespace and a labelled DataCenter, so that operators of other
# test suites on the same control plane leave them alone and vice versa.
namespace=roam-sanity
kubectl create namespace $namespace --dry-run=client -o yaml | kubectl apply -f - >/dev/null

node=sanity-node
dc=sanity-dc
storage_port=${ROAM_SANITY_STORAGE_PORT:-17400}
storage_endpoint=http://127.0.0.1:$storage_port
# Leftovers of an earlier run (volumes are recreated by the suite).
kubectl delete virtualvolumes --all -n $namespace --wait=false >/dev/null 2>&1 || true
kubectl apply -f - >/dev/null <<YAML
apiVersion: roam.dev/v1alpha1
kind: DataCenter
metadata:
  name: $dc
  labels:
    roam.dev/test: sanity
spec:
  zone: $dc
---
apiVersion: v1
kind: Node
metadata:
  name: $node
  labels:
    topology.kubernetes.io/zone: $dc
    kubernetes.io/hostname: $node
YAML

log "starting the operator and the CSI plugins (logs in $work)"
mkdir -p "$work/storage" "$work/state" "$work/staging" "$work/mount"
"$bin/roam-operator" --no-leader-election --metrics-addr 127.0.0.1:18480 \
	--watch-namespace $namespace --datacenter-selector roam.dev/test=sanity \
	>"$work/operator.log" 2>&1 &
pids+=($!)
"$bin/roam-csi" node --csi-endpoint "unix://$work/node.sock" --node-name "$node" \
	--storage-endpoint "$storage_endpoint" --storage-listen "127.0.0.1:$storage_port" \
	--storage-data-dir "$work/storage" --insecure --state-dir "$work/state" \
	--metrics-listen 127.0.0.1:18481 >"$work/node.log" 2>&1 &
pids+=($!)
"$bin/roam-csi" controller --csi-endpoint "unix://$work/controller.sock" \
	--volume-namespace $namespace --wait-timeout 60 \
	--metrics-listen 127.0.0.1:18482 >"$work/controller.log" 2>&1 &
pids+=($!)

for sock in node controller; do
	for _ in $(seq 1 100); do [[ -S $work/$sock.sock ]] && break; sleep 0.2; done
	[[ -S $work/$sock.sock ]] || { log "$sock plugin did not start"; exit 1; }
done
# The DataCenter is ready once the operator has seen the storage system.
for _ in $(seq 1 150); do
	ready=$(kubectl get datacenter "$dc" -o jsonpath='{.status.readyStorageSystems}' 2>/dev/null || true)
	[[ ${ready:-0} -ge 1 ]] && break
	sleep 0.2
done
[[ ${ready:-0} -ge 1 ]] || { log "DataCenter $dc has no ready storage system"; exit 1; }

# Nothing is skipped by name: every spec csi-sanity skips, it skips for a
# capability Roam does not advertise (docs/csi-conformance.md).
skip='^$'

failed=0
for access in mount block; do
	log "csi-sanity, $access access"
	start=$(date +%s)
	if ! csi-sanity \
		--csi.endpoint "unix://$work/node.sock" \
		--csi.controllerendpoint "unix://$work/controller.sock" \
		--csi.stagingdir "$work/staging/$access" \
		--csi.mountdir "$work/mount/$access" \
		--csi.testvolumeparameters e2e/sanity/params.yaml \
		--csi.testvolumesize 67108864 \
		--csi.testvolumeexpandsize 134217728 \
		--csi.testvolumeaccesstype "$access" \
		--csi.junitfile "$out/junit-$access.xml" \
		--ginkgo.skip "$skip" \
		--ginkgo.timeout 30m \
		>"$out/sanity-$access.log" 2>&1; then
		failed=1
		# CI keeps only this script's output: name what failed and where.
		sed 's/\x1b\[[0-9;]*m//g' "$out/sanity-$access.log" | sed -n '/^Summarizing/,$p' >&2
	fi
	log "$access: $(sed 's/\x1b\[[0-9;]*m//g' "$out/sanity-$access.log" | grep -E 'Passed \|' | tail -1) ($(( $(date +%s) - start ))s)"
done
exit $failed

#!/usr/bin/env bash
# Operator scale benchmark: N VirtualVolumes (default 1000) over three data
# centers (one real `roam-csi storage` process each, on 127.0.0.1) reach Ready.
#
# Reports: total time from the first apply to all Ready, the operator's peak
# RSS (VmHWM), and the VirtualVolume reconcile latency p50/p99 (from the
# operator's histogram). Results go to bench/results/operator-scale.txt.
#
# Needs the test control plane (started if not running) and the binaries
# target/<profile>/roam-operator and target/<profile>/roam-csi.
#
# Usage: bench/operator-scale.sh [N]   (PROFILE=release to use release builds)
set -euo pipefail
N=${1:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${PROFILE:-debug}
BIN=$ROOT/target/$PROFILE
KUBECTL=$ROOT/.tools/bin/kubectl
bash "$ROOT/e2e/cluster/control-plane.sh" start >/dev/null
export KUBECONFIG=${ROAM_CLUSTER_DIR:-$ROOT/.cluster}/kubeconfig
TAG=bench$$
NS=roam-$TAG
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  sleep 2
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  # The real volumes live in $WORK, removed below, and the operator is gone:
  # release the finalizers instead of deleting thousands of real volumes.
  "$KUBECTL" -n "$NS" get vv -o name 2>/dev/null |
    xargs -r -P8 -I{} "$KUBECTL" -n "$NS" patch {} --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1
  "$KUBECTL" delete ns "$NS" --wait=false >/dev/null 2>&1
  "$KUBECTL" delete dc -l roam.dev/test=$TAG >/dev/null 2>&1
  "$KUBECTL" delete node -l roam.dev/test=$TAG >/dev/null 2>&1
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$KUBECTL" apply --server-side --force-conflicts -f "$ROOT/crds/" >/dev/null
"$KUBECTL" create ns "$NS" >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for dc in a b c; do
  port=$(free_port)
  mkdir -p "$WORK/$dc"
  "$BIN/roam-csi" storage --data-dir "$WORK/$dc" --listen 127.0.0.1:$port \
    --advertise http://127.0.0.1:$port --data-center $TAG-$dc --node $TAG-$dc-n1 --insecure \
    >"$WORK/storage-$dc.log" 2>&1 &
  PIDS+=($!)
  cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Node
metadata:
  name: $TAG-$dc-n1
  labels: {topology.kubernetes.io/zone: $TAG-$dc, roam.dev/test: $TAG}
  annotations: {roam.dev/storage-endpoint: "http://127.0.0.1:$port"}
---
apiVersion: roam.dev/v1alpha1
kind: DataCenter
metadata:
  name: $TAG-$dc
  labels: {roam.dev/test: $TAG}
spec: {}
YAML
done
MPORT=$(free_port)
"$BIN/roam-operator" --watch-namespace "$NS" --datacenter-selector roam.dev/test=$TAG \
  --lease-namespace "$NS" --metrics-addr 127.0.0.1:$MPORT --concurrency 32 \
  >"$WORK/operator.log" 2>&1 &
OP=$!
PIDS+=($OP)
for _ in $(seq 60); do
  ready=$("$KUBECTL" get dc -l roam.dev/test=$TAG -o jsonpath='{range .items[*]}{.status.readyStorageSystems}{"\n"}{end}' | grep -c '^1$' || true)
  [ "$ready" = 3 ] && break
  sleep 1
done

python3 - "$N" "$TAG" >"$WORK/volumes.yaml" <<'PY'
import sys
n, tag = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    dcs = [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    pair = [dcs[i % 3], dcs[(i + 1) % 3]] if i % 2 else dcs
    t = "Sync" if i % 2 else "Async"
    print(f"---\napiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: v{i}\nspec:\n  size: 1Mi\n  dataCenters: [{', '.join(pair)}]\n  transferType: {t}")
PY
start=$(date +%s.%N)
"$KUBECTL" -n "$NS" apply --server-side -f "$WORK/volumes.yaml" >/dev/null
deadline=$((SECONDS + ${TIMEOUT:-1800}))
while :; do
  phases=$("$KUBECTL" -n "$NS" get vv -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}')
  ready=$(grep -c '^Ready$' <<<"$phases" || true)
  [ "$ready" -ge "$N" ] && break
  [ "$SECONDS" -lt "$deadline" ] || { echo "timed out: $ready of $N Ready" >&2; exit 1; }
  sleep 2
done
end=$(date +%s.%N)
total=$(python3 -c "print(f'{$end-$start:.1f}')")
rss=$(awk '/VmHWM/ {print $2, $3}' /proc/$OP/status)
metrics=$(curl -s http://127.0.0.1:$MPORT/metrics)
python3 - "$total" "$rss" "$N" <<PY | tee "$ROOT/bench/results/operator-scale.txt"
import sys, re
total, rss, n = sys.argv[1], sys.argv[2], sys.argv[3]
text = """$metrics"""
buckets = []
for line in text.splitlines():
    m = re.match(r'roam_operator_reconcile_duration_seconds_bucket\{(?=[^}]*controller="virtualvolume")[^}]*le="([^"]+)"[^}]*\} (\S+)', line)
    if m:
        buckets.append((float('inf') if m.group(1) == '+Inf' else float(m.group(1)), float(m.group(2))))
count = buckets[-1][1] if buckets else 0
def q(p):
    for le, c in buckets:
        if c >= p * count:
            return le
    return float('nan')
print(f"volumes: {n} (half Async over 3 DCs, half Sync over 2)")
print(f"all Ready after: {total} s")
print(f"operator peak RSS: {rss}")
print(f"virtualvolume reconciles: {int(count)}; latency p50 <= {q(0.5)} s, p99 <= {q(0.99)} s (histogram bucket bounds)")
PY

#!/usr/bin/env bash
# Operator scale benchmark: N VirtualVolumes (default 1000) over three data
# centers (one real `roam-csi storage` process each, on this host) reach Ready.
#
# Reports: total time from the first apply to all Ready, the operator's peak
# RSS (VmHWM), and the VirtualVolume reconcile latency p50/p99: exact
# quantiles of every reconcile's duration, which the operator logs at debug
# level under the target `roam_operator::timing`. Results go to
# bench/results/operator-scale.txt.
#
# Needs the test control plane (started if not running); builds release
# binaries of roam-operator and roam-csi first (PROFILE=debug for debug ones).
#
# Usage: bench/operator-scale.sh [N]   (NO_BUILD=1 uses the binaries as built)
set -euo pipefail
N=${1:-1000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${PROFILE:-release}
# Address the storage systems listen on and announce. Any other Roam operator
# watching the same control plane without a scope (e.g. a cluster's own, in
# its pod network) reconciles these objects too; where it cannot reach
# 127.0.0.1 it marks them unreachable and the two never agree. Set this to an
# address it can reach (the host's bridge address) to let both converge.
STORAGE_HOST=${STORAGE_HOST:-127.0.0.1}
BIN=$ROOT/target/$PROFILE
if [ -n "${NO_BUILD:-}" ]; then
  :
elif [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --release -q -p roam-operator -p roam-csi)
else
  (cd "$ROOT" && cargo build -q -p roam-operator -p roam-csi)
fi
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
  # Namespace first: once the objects are being deleted no other operator
  # watching this control plane can put its finalizer back.
  "$KUBECTL" delete ns "$NS" --wait=false >/dev/null 2>&1
  for _ in 1 2 3 4 5; do
    left=$("$KUBECTL" -n "$NS" get vv -o name 2>/dev/null)
    [ -n "$left" ] || break
    xargs -r -P8 -n20 "$KUBECTL" -n "$NS" patch --type=merge \
      -p '{"metadata":{"finalizers":null}}' <<<"$left" >/dev/null 2>&1
    sleep 2
  done
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
  "$BIN/roam-csi" storage --data-dir "$WORK/$dc" --listen $STORAGE_HOST:$port \
    --advertise http://$STORAGE_HOST:$port --data-center $TAG-$dc --node $TAG-$dc-n1 --insecure \
    >"$WORK/storage-$dc.log" 2>&1 &
  PIDS+=($!)
  cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Node
metadata:
  name: $TAG-$dc-n1
  labels: {topology.kubernetes.io/zone: $TAG-$dc, roam.dev/test: $TAG}
  annotations: {roam.dev/storage-endpoint: "http://$STORAGE_HOST:$port"}
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
RUST_LOG=info,roam_operator::timing=debug \
"$BIN/roam-operator" --watch-namespace "$NS" --datacenter-selector roam.dev/test=$TAG \
  --lease-namespace "$NS" --metrics-addr 127.0.0.1:$MPORT --concurrency ${CONCURRENCY:-32} \
  >"$WORK/operator.log" 2>&1 &
OP=$!
PIDS+=($OP)
for _ in $(seq 60); do
  ready=$("$KUBECTL" get dc -l roam.dev/test=$TAG -o jsonpath='{range .items[*]}{.status.readyStorageSystems}{"\n"}{end}' | grep -c '^1$' || true)
  [ "$ready" = 3 ] && break
  sleep 1
done

# The volumes, in APPLIERS files applied in parallel: one kubectl process
# applies its objects one request at a time, which alone took minutes for
# 1,000 objects on this machine.
APPLIERS=${APPLIERS:-8}
python3 - "$N" "$TAG" "$WORK" "$APPLIERS" <<'PY'
import sys
n, tag, work, parts = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
files = [open(f"{work}/volumes-{p}.yaml", "w") for p in range(parts)]
for i in range(n):
    dcs = [f"{tag}-a", f"{tag}-b", f"{tag}-c"]
    pair = [dcs[i % 3], dcs[(i + 1) % 3]] if i % 2 else dcs
    t = "Sync" if i % 2 else "Async"
    files[i % parts].write(f"---\napiVersion: roam.dev/v1alpha1\nkind: VirtualVolume\nmetadata:\n  name: v{i}\nspec:\n  size: 1Mi\n  dataCenters: [{', '.join(pair)}]\n  transferType: {t}\n")
for f in files:
    f.close()
PY
start=$(date +%s.%N)
ls "$WORK"/volumes-*.yaml |
  xargs -P"$APPLIERS" -I{} "$KUBECTL" -n "$NS" apply --server-side -f {} >/dev/null
applied=$(date +%s.%N)
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
applied=$(python3 -c "print(f'{$applied-$start:.1f}')")
rss=$(awk '/VmHWM/ {print $2, $3}' /proc/$OP/status)
metrics=$(curl -s http://127.0.0.1:$MPORT/metrics)
cp "$WORK/operator.log" "${OPERATOR_LOG:-/dev/null}" 2>/dev/null || true
python3 - "$total" "$rss" "$N" "$WORK/operator.log" "$PROFILE" "$applied" <<PY | tee "$ROOT/bench/results/operator-scale.txt"
import sys, re
total, rss, n, log, profile, applied = sys.argv[1:7]
text = """$metrics"""
def counter(name, **labels):
    s = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return int(s)
# Exact quantiles from the per-reconcile durations the operator logged.
durations = []
pat = re.compile(r'roam_operator::timing: reconciled controller="?virtualvolume"? seconds=(\S+)')
with open(log, errors="replace") as f:
    for line in f:
        m = pat.search(re.sub(r'\x1b\[[0-9;]*m', '', line))
        if m:
            durations.append(float(m.group(1)))
durations.sort()
def q(p):
    if not durations:
        return float("nan")
    return durations[min(len(durations) - 1, int(p * len(durations)))]
errors = counter("roam_operator_reconcile_errors_total", controller="virtualvolume")
print(f"volumes: {n} (half Async over 3 DCs, half Sync over 2)")
print(f"all Ready after: {total} s (from the first apply; applying took {applied} s with $APPLIERS parallel kubectl)")
print(f"operator peak RSS: {rss}")
print(f"virtualvolume reconciles: {len(durations)} ({errors} failed); "
      f"latency p50 {q(0.5) * 1000:.1f} ms, p99 {q(0.99) * 1000:.1f} ms, max {durations[-1] * 1000 if durations else 0:.1f} ms")
print(f"machine: 2 shared cores, 24 GiB; {profile} builds; control plane, 3 storage processes and the bench on the same cores")
PY

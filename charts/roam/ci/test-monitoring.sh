#!/usr/bin/env bash
# Monitoring on the local cluster (tier 5 of make test, Roam installed): a
# real Prometheus (Debian's package) scrapes every Roam pod with the chart's
# rules loaded, then, with a pod of the test writing to a Roam volume and a
# relocation of a second volume done by `kubectl roam relocate`,
#   - every panel of the chart's Grafana dashboard gets data from it: a
#     number, not NaN (so a latency histogram that saw no I/O fails it);
#   - RoamMemberOutOfSync fires when a secondary of a volume that a pod of
#     the test writes to is partitioned from its primary
#     (e2e/cluster/faults.sh), and clears after the heal.
# The alert's `for` is shortened to 10s (a value of the chart); scrapes and
# rule evaluations run every 2s. Every wait is bounded and polls a condition.
#
#   charts/roam/ci/test-monitoring.sh      (KUBECONFIG: the local cluster's)
set -euo pipefail

chart="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$chart/../.." && pwd)"
export PATH="$repo/.tools/bin:$PATH"
export KUBECONFIG="${KUBECONFIG:-${ROAM_CLUSTER_DIR:-$repo/.cluster}/kubeconfig}"
ns="${ROAM_NAMESPACE:-roam-system}"
work="$(mktemp -d)"
prom_pid=""
partition=()
say() { echo "test-monitoring: $*"; }
fail() { say "FAIL: $*"; exit 1; }
test_ns=""
cleanup() {
    if [[ -n "$test_ns" ]]; then kubectl delete namespace "$test_ns" --wait=false >/dev/null 2>&1 || true; fi
    if ((${#partition[@]})); then bash "$repo/e2e/cluster/faults.sh" heal "${partition[@]}" >/dev/null 2>&1 || true; fi
    if [[ -n "$prom_pid" ]]; then kill "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
command -v prometheus >/dev/null || fail "prometheus is not installed (make tools installs Debian's package)"

# The rules as the chart renders them.
helm template roam "$chart" -n "$ns" --show-only templates/monitoring.yaml \
    --set monitoring.prometheusRule.enabled=true \
    --set monitoring.prometheusRule.outOfSyncFor=10s >"$work/rule.yaml"
python3 - "$work/rule.yaml" "$work/rules.yaml" <<'PY'
import sys, yaml
doc = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule")
yaml.safe_dump(doc["spec"], open(sys.argv[2], "w"))
PY

# Targets: the node plugins (host network, node addresses), the operator and
# controller pods (pod addresses, routed from the host).
{
    echo "global: {scrape_interval: 2s, evaluation_interval: 2s}"
    echo "rule_files: [$work/rules.yaml]"
    echo "scrape_configs:"
    echo "  - job_name: roam"
    echo "    static_configs:"
    # The running node plugins (host network: their pod address is the node's).
    while read -r node ip; do
        [[ -n "$ip" ]] || continue
        echo "      - targets: ['$ip:9809', '$ip:9810']"
        echo "        labels: {kubernetes_node: $node, component: csi-node}"
    done < <(kubectl -n "$ns" get pods -l app.kubernetes.io/component=csi-node --field-selector=status.phase=Running \
        -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.podIP}{"\n"}{end}')
    while read -r node ip comp; do
        port=8080; [[ "$comp" == csi-controller ]] && port=9808
        echo "      - targets: ['$ip:$port']"
        echo "        labels: {kubernetes_node: $node, component: $comp}"
    done < <(kubectl -n "$ns" get pods -l 'app.kubernetes.io/component in (operator,csi-controller)' --field-selector=status.phase=Running \
        -o jsonpath='{range .items[*]}{.spec.nodeName} {.status.podIP} {.metadata.labels.app\.kubernetes\.io/component}{"\n"}{end}')
} >"$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
    --web.listen-address="127.0.0.1:$port" >"$work/prometheus.log" 2>&1 &
prom_pid=$!
api="http://127.0.0.1:$port/api/v1"

# poll SECONDS DESCRIPTION COMMAND...: run COMMAND every second until it succeeds.
poll() {
    local limit=$1 what=$2 start=$SECONDS
    shift 2
    until "$@"; do
        ((SECONDS - start < limit)) || { tail -n 20 "$work/prometheus.log" >&2; fail "$what: not after ${limit}s"; }
        sleep 1
    done
    say "$what ($((SECONDS - start))s)"
}
query() { curl -sf --get "$api/query" --data-urlencode "query=$1"; }
targets_up() {
    curl -sf "$api/targets" | python3 -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if t and all(x["health"] == "up" for x in t) else 1)' 2>/dev/null
}
poll 60 "every Roam target is scraped" targets_up

# A volume of the test's own, written every second by a pod (its mount reads
# too); later its primary is partitioned from a secondary.
test_ns="roam-monitoring-test-$RANDOM$RANDOM"
kubectl create namespace "$test_ns" >/dev/null
kubectl apply -n "$test_ns" -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: probe}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ${ROAM_MONITORING_CLASS:-roam-sync}
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: writer
      image: roam.local/busybox:1.35
      imagePullPolicy: IfNotPresent
      command: [sh, -c, 'while true; do date >> /data/probe.log; sync; sleep 1; done']
      volumeMounts: [{name: data, mountPath: /data}]
  volumes:
    - name: data
      persistentVolumeClaim: {claimName: probe}
---
# No pod uses this one: kubectl roam relocate may move it.
apiVersion: roam.dev/v1alpha1
kind: VirtualVolume
metadata: {name: spare}
spec:
  size: 16Mi
  dataCenters: [dc-a, dc-b]
  transferType: Sync
YAML
kubectl-roam() { "$repo/target/debug/kubectl-roam" "$@"; }
kubectl -n "$test_ns" wait --for=jsonpath='{.status.phase}'=Ready virtualvolume/spare --timeout=180s >/dev/null
read -r spare_to < <(kubectl-roam status spare -n "$test_ns" -o json | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(next(m["dataCenter"] for m in v["members"] if m["dataCenter"] != v["primary"]))')
kubectl-roam relocate spare --to "$spare_to" -n "$test_ns" --timeout 2m >/dev/null
say "kubectl roam relocate moved volume spare to $spare_to"
kubectl -n "$test_ns" wait --for=condition=Ready pod/writer --timeout=180s >/dev/null
say "pod writer runs on a Roam volume"
read -r volume primary secondary < <(kubectl-roam status pvc/probe -n "$test_ns" -o json | python3 -c '
import json, sys
v = json.load(sys.stdin)
sec = next(m["dataCenter"] for m in v["members"] if m["dataCenter"] != v["primary"])
print(v["namespace"] + "." + v["name"], v["primary"], sec)')
writes() { query "sum(rate(roam_storage_writes_total{volume=\"$volume\"}[1m]))" | python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) > 0 else 1)' 2>/dev/null; }
poll 60 "Prometheus sees the writes to $volume" writes
# The file system's mount read the volume through the node plugin's frontend.
reads() { query 'sum(rate(roam_storage_reads_total[5m])) > 0' | grep -q '"value"'; }
poll 60 "Prometheus sees host reads" reads
# (The histogram is exported from the start, at 0, so its rise is seen;
# the relocation counter's series only appears with its first change.)
relocated() { query 'sum(increase(roam_operator_relocation_duration_seconds_count[1h])) > 0' | grep -q '"value"'; }
poll 60 "Prometheus sees the relocation" relocated

# Every panel of the dashboard shows data ($volume and $data_center: all):
# at least one of its queries returns a number.
python3 - "$chart/dashboards/roam.json" "$api" <<'PY'
import json, math, sys, urllib.parse, urllib.request
dash, api = json.load(open(sys.argv[1])), sys.argv[2]
empty = []
for panel in dash["panels"]:
    got = 0
    for t in panel["targets"]:
        q = t["expr"].replace("$volume", ".*").replace("$data_center", ".*")
        url = api + "/query?" + urllib.parse.urlencode({"query": q})
        res = json.load(urllib.request.urlopen(url))
        if res["status"] != "success":
            sys.exit(f"query failed: {q}: {res}")
        got += sum(1 for r in res["data"]["result"] if math.isfinite(float(r["value"][1])))
    if not got:
        empty.append(panel["title"])
if empty:
    sys.exit("panels without data: " + ", ".join(empty))
print(f"test-monitoring: all {len(dash['panels'])} dashboard panels have data")
PY

alert_state() {
    curl -sf "$api/alerts" | python3 -c '
import json, sys
vol, member, want = sys.argv[1:]
a = [x for x in json.load(sys.stdin)["data"]["alerts"]
     if x["labels"].get("alertname") == "RoamMemberOutOfSync"
     and x["labels"].get("volume") == vol and x["labels"].get("member") == member]
state = a[0]["state"] if a else "none"
sys.exit(0 if state == want else 1)' "$volume" "$secondary" "$1" 2>/dev/null
}
in_sync() { query "roam_storage_member_in_sync{volume=\"$volume\",member=\"$secondary\"} == 1" | grep -q '"value"'; }
# A new volume's secondaries start with a full copy: wait until it is done.
poll 180 "$secondary holds all of $volume before the fault" in_sync
poll 60 "no out-of-sync alert for $volume before the fault" alert_state none
partition=("$primary" "$secondary")
bash "$repo/e2e/cluster/faults.sh" partition "$primary" "$secondary" >/dev/null
say "partitioned $primary | $secondary (volume $volume)"
poll 120 "RoamMemberOutOfSync fires for $volume member $secondary" alert_state firing
bash "$repo/e2e/cluster/faults.sh" heal "$primary" "$secondary" >/dev/null
partition=()
say "healed"
poll 180 "RoamMemberOutOfSync clears" alert_state none
say "monitoring test passed"

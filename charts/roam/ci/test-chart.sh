#!/usr/bin/env bash
# The chart's test (tier 3 of make test): helm lint and helm template with
# the default values and with every feature on (ci/all-features-values.yaml),
# the values schema refusing an unknown key, `promtool check rules` on the
# PrometheusRule's groups and `promtool test rules` of its alerts
# (ci/rules-test.yaml), and `kubectl apply --dry-run=server` of both
# renderings against the real API server of the test control plane, which
# checks every object against the API's schemas and admission (the
# prometheus-operator kinds excepted: their CRDs are not installed there; the
# VolumeSnapshot CRDs are, by e2e/cluster/install-snapshots.sh --crds-only).
#
#   charts/roam/ci/test-chart.sh          (KUBECONFIG: the control plane's)
set -euo pipefail

chart="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
repo="$(cd "$chart/../.." && pwd)"
export PATH="$repo/.tools/bin:$PATH"
export KUBECONFIG="${KUBECONFIG:-${ROAM_CLUSTER_DIR:-$repo/.cluster}/kubeconfig}"
all="$chart/ci/all-features-values.yaml"
work="$(mktemp -d)"
ns="roam-chart-test-$RANDOM$RANDOM"
cleanup() {
    kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
say() { echo "test-chart: $*"; }

helm lint --strict "$chart" >/dev/null
helm lint --strict "$chart" -f "$all" >/dev/null
say "helm lint: default and all-features values pass"

helm template roam "$chart" -n "$ns" --include-crds >"$work/default.yaml"
helm template roam "$chart" -n "$ns" --include-crds -f "$all" >"$work/all.yaml"
say "helm template: $(grep -c '^kind:' "$work/default.yaml") objects (default), $(grep -c '^kind:' "$work/all.yaml") (all features)"

if helm template roam "$chart" --set operator.replicaz=2 >/dev/null 2>&1; then
    say "FAIL: values.schema.json accepted an unknown key"; exit 1
fi
say "values.schema.json refuses an unknown key"

# The rules exactly as the PrometheusRule carries them.
python3 - "$work/all.yaml" "$work/rules.yaml" "$work/dry-run.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"{len(rules)} PrometheusRules"
yaml.safe_dump(rules[0]["spec"], open(sys.argv[2], "w"))
rest = [d for d in docs if not d["apiVersion"].startswith("monitoring.coreos.com/")]
yaml.safe_dump_all(rest, open(sys.argv[3], "w"))
PY
promtool check rules "$work/rules.yaml"
# The alerts' unit tests: which series make each one fire, and which do not
# (RoamFailover only for a possible loss above 0).
cp "$chart/ci/rules-test.yaml" "$work/rules-test.yaml"
promtool test rules "$work/rules-test.yaml"

# The VolumeSnapshotClass needs its CRD, as on any cluster with snapshots.
bash "$repo/e2e/cluster/install-snapshots.sh" --crds-only
kubectl create namespace "$ns" >/dev/null
for f in default dry-run; do
    # stderr: kubectl warns about the CRDs the tests created without apply.
    if ! kubectl apply --dry-run=server -n "$ns" -f "$work/$f.yaml" >"$work/$f.out" 2>"$work/$f.err"; then
        cat "$work/$f.err" >&2; exit 1
    fi
    say "kubectl apply --dry-run=server ($f): $(wc -l <"$work/$f.out") objects accepted"
done
say "chart test passed"

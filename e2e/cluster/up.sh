#!/usr/bin/env bash
# Starts the local three-data-center cluster: the control plane (etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler on the host's
# loopback) and three nodes dc-a, dc-b, dc-c, each a real kubelet with its own
# containerd in network and mount namespaces of its own. Waits until the three
# nodes are Ready. Running it again while the cluster is up changes nothing.
#
#   e2e/cluster/up.sh            (make up runs it after make tools and make build)
#
# Environment:
#   ROAM_CLUSTER_DIR   cluster state (default <repo>/.cluster)
#   ROAM_CACHE         built images (default $HOME/.cache/roam)
#   ROAM_UP_TIMEOUT    seconds to wait for Ready nodes (default 120)
# See docs/cluster.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
# shellcheck source=e2e/cluster/lib-net.sh
source "$here/lib-net.sh"
ROAM_LOG_TAG=up

need_commands() {
    local missing=() c
    for c in kubelet kubectl kube-apiserver etcd; do
        [[ -x "$ROAM_TOOLS/bin/$c" ]] || missing+=("$ROAM_TOOLS/bin/$c (run: make tools)")
    done
    for c in containerd containerd-shim-runc-v2 runc ctr iptables nsenter unshare losetup busybox curl; do
        command -v "$c" >/dev/null || missing+=("$c (run: make tools, which installs the Debian packages)")
    done
    # The pause image is compiled here (e2e/images/pause.c).
    [[ -f /usr/lib/x86_64-linux-gnu/libc.a || -f /usr/lib/aarch64-linux-gnu/libc.a ]] && command -v gcc >/dev/null ||
        missing+=("gcc and a static libc (Debian: apt-get install gcc libc6-dev)")
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        missing+=("/usr/lib/cni/{bridge,host-local,loopback} (Debian: containernetworking-plugins)")
    if ((${#missing[@]})); then
        printf 'missing: %s\n' "${missing[@]}" >&2
        exit 1
    fi
    ((EUID == 0)) || die "the local cluster needs root (namespaces, mounts, iptables)"
    need_space
}

# Prints the names of our nodes that are Ready. $1 is a time (UTC, RFC 3339)
# and $2.. the nodes started by this run: their Ready condition counts only
# when a heartbeat since then set it, so a Node object left Ready by an
# earlier run does not count.
ready_nodes() {
    local since="$1"
    shift
    kubectl --kubeconfig "$ROAM_CLUSTER_DIR/kubeconfig" get nodes "${ROAM_NODES[@]}" \
        -o jsonpath='{range .items[*]}{.metadata.name}{" "}{range .status.conditions[?(@.type=="Ready")]}{.status}{" "}{.lastHeartbeatTime}{end}{"\n"}{end}' \
        2>/dev/null | awk -v since="$since" -v fresh=" $* " \
        '$2 == "True" && (index(fresh, " " $1 " ") == 0 || $3 >= since) { print $1 }'
}

all_ready() { [[ "$(ready_nodes "$@" | wc -l)" -eq "${#ROAM_NODES[@]}" ]]; }

# The nodes keep their images (about 600 MB each) and every replica, which
# takes its full size at once (preallocated), under $ROAM_CLUSTER_DIR. Below
# this much free space the examples and the end-to-end suite cannot all get
# their replicas; say so now rather than as a Degraded volume later.
ROAM_MIN_FREE_GB="${ROAM_MIN_FREE_GB:-6}"
need_space() {
    mkdir -p "$ROAM_CLUSTER_DIR"
    local free_kb
    free_kb=$(df -Pk "$ROAM_CLUSTER_DIR" | awk 'NR == 2 { print $4 }')
    ((free_kb >= ROAM_MIN_FREE_GB * 1024 * 1024)) ||
        die "only $((free_kb / 1024)) MB free under $ROAM_CLUSTER_DIR; the local cluster needs ${ROAM_MIN_FREE_GB} GB (set ROAM_MIN_FREE_GB to override)"
    log "$((free_kb / 1024 / 1024)) GB free under $ROAM_CLUSTER_DIR"
}

main() {
    local begin=$SECONDS node pids=() pid failed=0
    need_commands
    "$here/control-plane.sh" start >/dev/null
    log "control plane ready ($((SECONDS - begin))s)"
    hosts_up
    # Build the node images once, before the nodes import them in parallel.
    "$repo_root/e2e/images/build.sh" >/dev/null

    local since fresh=()
    since="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for node in "${ROAM_NODES[@]}"; do
        node_pid "$node" kubelet >/dev/null || fresh+=("$node")
    done
    for node in "${ROAM_NODES[@]}"; do
        "$here/node.sh" start "$node" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    ((failed == 0)) || die "a node failed to start (logs: $ROAM_CLUSTER_DIR/nodes/<node>/logs/)"

    wait_for "${ROAM_UP_TIMEOUT:-120}" all_ready "$since" "${fresh[@]}" || {
        kubectl --kubeconfig "$ROAM_CLUSTER_DIR/kubeconfig" get nodes -o wide >&2 || true
        die "nodes not Ready after ${ROAM_UP_TIMEOUT:-120}s (kubelet logs: $ROAM_CLUSTER_DIR/nodes/<node>/logs/kubelet.log)"
    }
    log "three nodes Ready in $((SECONDS - begin))s"
    cat <<USAGE
Cluster is up: nodes ${ROAM_NODES[*]} (label topology.kubernetes.io/zone=<node>).
  export KUBECONFIG=$ROAM_CLUSTER_DIR/kubeconfig
  export PATH=$ROAM_TOOLS/bin:\$PATH
  kubectl get nodes -L topology.kubernetes.io/zone
Images: e2e/cluster/node-images.sh <tarball>... loads an image into every node
        (pods use imagePullPolicy: IfNotPresent; roam.local/busybox:1.35 is there).
A node's view: e2e/cluster/node.sh exec dc-a <command>
Faults: e2e/cluster/faults.sh help
Stop:   make down
USAGE
}

main "$@"

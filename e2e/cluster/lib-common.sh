# shellcheck shell=bash disable=SC2034 # settings used by the scripts that source this
# Shared settings of the local three-data-center cluster: where things live,
# which addresses each node gets, small helpers. Sourced by every script in
# e2e/cluster/.
#
# Layout of one node, dc-a (all under $ROAM_CLUSTER_DIR/nodes/dc-a/):
#   etc/          containerd.toml, kubelet.yaml, kubelet.kubeconfig, cni/net.d/
#   run/          containerd.sock (the node's CRI endpoint, reachable from the host)
#   mnt/<dir>/    bind-mounted over the path <dir> inside the node's mount
#                 namespace: var/lib/kubelet (rshared), var/lib/containerd,
#                 run/containerd, var/lib/cni, var/log/pods, var/log/containers,
#                 run/netns, var/lib/roam (the node's own data disk)
#   logs/         containerd.log, kubelet.log, node.log
#   pids/         node (the namespace holder), containerd, kubelet

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export ROAM_CACHE="${ROAM_CACHE:-$HOME/.cache/roam}"
export ROAM_CLUSTER_DIR="${ROAM_CLUSTER_DIR:-$repo_root/.cluster}"
export ROAM_TOOLS="${ROAM_TOOLS:-$repo_root/.tools}"
export PATH="$ROAM_TOOLS/bin:$PATH"

# The nodes, one per data center; their zone label is their name.
ROAM_NODES=(dc-a dc-b dc-c)

# Host bridge and the node network: node i gets 10.77.0.(10+i), pod subnet
# 10.78.i.0/24. Private ranges chosen to stay clear of the usual 10.96/12
# service range and 10.244/16 pod range of other tools.
ROAM_BRIDGE="roam0"
ROAM_HOST_IP="10.77.0.1"
ROAM_NODE_NET_PREFIX="10.77.0"
ROAM_POD_NET_PREFIX="10.78"
ROAM_POD_CIDR="10.78.0.0/16"

# Directories a node sees as its own (bind-mounted in its mount namespace).
ROAM_NODE_MOUNTS=(
    var/lib/kubelet
    var/lib/containerd
    run/containerd
    var/lib/cni
    var/log/pods
    var/log/containers
    run/netns
    var/lib/roam
)

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "${ROAM_LOG_TAG:-cluster}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

node_index() {
    case "$1" in
        dc-a) echo 1 ;;
        dc-b) echo 2 ;;
        dc-c) echo 3 ;;
        *)
            echo "unknown node '$1' (expected one of: ${ROAM_NODES[*]})" >&2
            return 1
            ;;
    esac
}
node_ip() { echo "$ROAM_NODE_NET_PREFIX.$((10 + $(node_index "$1")))"; }
node_pod_cidr() { echo "$ROAM_POD_NET_PREFIX.$(node_index "$1").0/24"; }
node_netns() { echo "roam-$1"; }
node_dir() { echo "$ROAM_CLUSTER_DIR/nodes/$1"; }
node_sock() { echo "$(node_dir "$1")/run/containerd.sock"; }
node_cgroup_root() { echo "/roam-$1"; }

# The pid stored in <node>/pids/<what>, if that process is still alive and
# still runs the program it was started as (a stale pid file, after a
# reboot say, never points at an unrelated process).
node_pid() {
    local file pid program
    file="$(node_dir "$1")/pids/$2"
    case "$2" in
        node) program="sleep" ;;
        *) program="$2" ;;
    esac
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    pid_alive "$pid" && pid_runs "$pid" "$program" && echo "$pid"
}

# Whether process $1 runs the executable named $2.
pid_runs() {
    local exe
    exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
    [[ "$(basename "$exe")" == "$2" ]]
}

# A process counts as alive while it exists and is not a zombie.
pid_alive() {
    local state
    [[ "$1" =~ ^[0-9]+$ ]] || return 1
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z ]]
}

# Waits at most $1 seconds for process $2 to be gone.
wait_until_dead() {
    local deadline=$((SECONDS + $1))
    while pid_alive "$2"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# Runs a command inside a node's network and mount namespaces (those of its
# namespace holder process), i.e. with the node's view of the filesystem.
node_exec() {
    local node="$1" pid
    shift
    pid="$(node_pid "$node" node)" || {
        echo "node $node is not running" >&2
        return 1
    }
    nsenter --target "$pid" --mount --net -- "$@"
}

# Waits until a command succeeds, polling every 0.2 s, for at most $1 seconds.
wait_for() {
    local timeout="$1" deadline
    shift
    deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

# Attached loop devices as "<dev> <backing file> <dev:inode of the backing file>"
# (the device number encoded as stat's %d prints it).
loop_devices() {
    local dev majmin ino file maj min
    while read -r dev majmin ino file; do
        [[ -n "$file" && "$majmin" == *:* ]] || continue
        maj="${majmin%%:*}"
        min="${majmin#*:}"
        echo "$dev $file $(((maj << 8) | (min & 0xff) | ((min & ~0xff) << 12))):$ino"
    done < <(losetup -l -n -O NAME,BACK-MAJ:MIN,BACK-INO,BACK-FILE 2>/dev/null)
}

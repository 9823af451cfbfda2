#!/usr/bin/env bash
# One node of the local cluster: a real kubelet and its own containerd, in a
# network namespace of their own and a mount namespace of their own, as a kind
# node container would have.
#
#   node.sh start  <node>   network, namespaces, containerd, kubelet (idempotent)
#   node.sh stop   <node>   kubelet, pods, containerd, mounts, cgroups, network
#   node.sh status <node>   prints what runs; exit 1 when something is missing
#   node.sh exec   <node> <cmd...>   runs cmd with the node's view (mounts + network)
#
# The mount namespace is a slave of the host's (host mounts show up inside,
# nothing mounted inside leaks out) and is held open by a small holder
# process. Inside it the node's own directories are bind-mounted over
# /var/lib/kubelet (made rshared, so that CSI mounts propagate to pods),
# /var/lib/containerd, /run/containerd, /var/lib/cni, /var/log/pods,
# /var/log/containers, /run/netns and /var/lib/roam; see lib-common.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
# shellcheck source=e2e/cluster/lib-net.sh
source "$here/lib-net.sh"
# shellcheck source=e2e/cluster/lib-node-config.sh
source "$here/lib-node-config.sh"
# shellcheck source=e2e/cluster/lib-images.sh
source "$here/lib-images.sh"

# Runs inside the fresh mount namespace (see start_holder): mounts the node's
# directories, records its pid, then sleeps to keep the namespace open.
holder_main() {
    local node="$1" dir m
    dir="$(node_dir "$node")"
    for m in "${ROAM_NODE_MOUNTS[@]}"; do
        mkdir -p "/$m" "$dir/mnt/$m"
        mount --bind "$dir/mnt/$m" "/$m"
    done
    mount --make-rshared /var/lib/kubelet
    echo $$ >"$dir/pids/node"
    exec sleep infinity
}

start_holder() {
    local node="$1" dir
    dir="$(node_dir "$node")"
    node_pid "$node" node >/dev/null && return 0
    rm -f "$dir/pids/node"
    setsid nsenter --net="/run/netns/$(node_netns "$node")" -- \
        unshare --mount --propagation slave -- "$here/node.sh" _holder "$node" \
        </dev/null >>"$dir/logs/node.log" 2>&1 &
    wait_for 10 node_pid "$node" node || die "$node: namespace holder did not start (see $dir/logs/node.log)"
}

# Creates the node's cgroup root in every mounted hierarchy (kubelet wants it
# to exist); cpuset needs its cpus and mems copied from the parent.
make_cgroup_root() {
    local root="$1" hier
    for hier in /sys/fs/cgroup/*/; do
        [[ -d "$hier" ]] || continue
        mkdir -p "$hier$root"
    done
    local cpuset="/sys/fs/cgroup/cpuset$root"
    if [[ -f "$cpuset/cpuset.cpus" && -z "$(cat "$cpuset/cpuset.cpus")" ]]; then
        cat /sys/fs/cgroup/cpuset/cpuset.cpus >"$cpuset/cpuset.cpus"
        cat /sys/fs/cgroup/cpuset/cpuset.mems >"$cpuset/cpuset.mems"
    fi
}

# Starts a daemon inside the node's namespaces, writing its pid to pids/<what>.
start_in_node() {
    local node="$1" what="$2" dir
    shift 2
    dir="$(node_dir "$node")"
    node_pid "$node" "$what" >/dev/null && return 0
    local holder
    holder="$(node_pid "$node" node)"
    # shellcheck disable=SC2016
    setsid nsenter --target "$holder" --mount --net -- \
        bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$dir/pids/$what" "$@" \
        </dev/null >>"$dir/logs/$what.log" 2>&1 &
    wait_for 10 node_pid "$node" "$what" || die "$node: $what did not start (see $dir/logs/$what.log)"
}

node_kubeconfig() {
    local node="$1" out
    out="$(node_dir "$node")/etc/kubelet.kubeconfig"
    [[ -s "$out" ]] && return 0
    # The node reaches the apiserver through the bridge address (see
    # lib-net.sh); the serving certificate names 127.0.0.1, so the kubelet
    # verifies it against that name.
    ROAM_APISERVER_URL="https://$ROAM_HOST_IP:$ROAM_APISERVER_PORT" \
        "$here/control-plane.sh" kubeconfig "system:node:$node" system:nodes "$out.tmp" >/dev/null
    sed -i -E 's#^( *)server: (.*)$#\1server: \2\n\1tls-server-name: 127.0.0.1#' "$out.tmp"
    mv "$out.tmp" "$out"
}

cmd_start() {
    local node="$1" dir
    node_index "$node" >/dev/null
    dir="$(node_dir "$node")"
    ROAM_LOG_TAG="$node"
    mkdir -p "$dir/etc" "$dir/run" "$dir/logs" "$dir/pids"

    net_host_up
    net_node_up "$node"
    write_containerd_config "$node"
    write_cni_config "$node"
    write_kubelet_config "$node"
    node_kubeconfig "$node"
    make_cgroup_root "$(node_cgroup_root "$node")"

    start_holder "$node"
    start_in_node "$node" containerd containerd --config "$dir/etc/containerd.toml"
    wait_for 20 ctr --address "$(node_sock "$node")" version ||
        die "$node: containerd does not answer (see $dir/logs/containerd.log)"
    local images
    mapfile -t images < <("$repo_root/e2e/images/build.sh")
    images_import_node "$node" "${images[@]}"

    start_in_node "$node" kubelet kubelet \
        --config="$dir/etc/kubelet.yaml" \
        --kubeconfig="$dir/etc/kubelet.kubeconfig" \
        --root-dir=/var/lib/kubelet \
        --cert-dir=/var/lib/kubelet/pki \
        --hostname-override="$node" \
        --node-ip="$(node_ip "$node")" \
        --node-labels="topology.kubernetes.io/zone=$node" \
        --v="${ROAM_KUBELET_VERBOSITY:-1}"
    log "started (ip $(node_ip "$node"), pods $(node_pod_cidr "$node"))"
}

# Every process of the node's containers: whatever sits in its cgroup tree.
container_pids() {
    local root="$1"
    find /sys/fs/cgroup/pids"$root" /sys/fs/cgroup/memory"$root" -name cgroup.procs \
        -exec cat {} + 2>/dev/null | sort -un
}

kill_and_wait() {
    local pids=("$@") pid
    ((${#pids[@]})) || return 0
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
        wait_until_dead 10 "$pid" || log "pid $pid survived SIGKILL"
    done
}

stop_daemon() {
    local node="$1" what="$2" pid
    pid="$(node_pid "$node" "$what")" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait_until_dead 10 "$pid" || kill_and_wait "$pid"
    rm -f "$(node_dir "$node")/pids/$what"
}

remove_cgroup_root() {
    local root="$1" hier
    for hier in /sys/fs/cgroup/*/; do
        [[ -d "$hier$root" ]] || continue
        find "$hier$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d "$hier$root" ]] && log "cgroup $hier$root could not be removed"
    done
    return 0
}

# Loop devices whose backing file is one of this node's files (compared by
# device and inode in the node's own view) are detached; a device still
# mounted is released by the kernel once the node's mount namespace is gone.
detach_node_loops() {
    local node="$1" dev file back want
    while read -r dev file back; do
        [[ -n "$file" ]] || continue
        want="$(node_exec "$node" stat -L -c '%d:%i' "$file" 2>/dev/null)" || continue
        if [[ "$want" == "$back" ]]; then
            losetup -d "$dev" 2>/dev/null || true
        fi
    done < <(loop_devices)
}

cmd_stop() {
    local node="$1" dir ns root
    node_index "$node" >/dev/null
    dir="$(node_dir "$node")"
    ns="$(node_netns "$node")"
    root="$(node_cgroup_root "$node")"
    ROAM_LOG_TAG="$node"

    stop_daemon "$node" kubelet
    detach_node_loops "$node"
    # Containers first (their shims would restart nothing once containerd is
    # gone, but would linger), then the daemons, then what they left.
    mapfile -t pids < <(container_pids "$root")
    kill_and_wait "${pids[@]}"
    stop_daemon "$node" containerd
    if [[ -e "/run/netns/$ns" ]]; then
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        kill_and_wait "${pids[@]}"
    fi
    stop_daemon "$node" node
    remove_cgroup_root "$root"
    net_node_down "$node"
    log "stopped"
}

cmd_status() {
    local node="$1" what ok=0
    for what in node containerd kubelet; do
        if pid="$(node_pid "$node" "$what")"; then
            echo "$node $what running (pid $pid)"
        else
            echo "$node $what not running"
            ok=1
        fi
    done
    return $ok
}

case "${1:-}" in
    start) cmd_start "${2:?node name}" ;;
    stop) cmd_stop "${2:?node name}" ;;
    status) cmd_status "${2:?node name}" ;;
    exec)
        node="${2:?node name}"
        shift 2
        node_exec "$node" "$@"
        ;;
    _holder) holder_main "${2:?node name}" ;;
    *)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac

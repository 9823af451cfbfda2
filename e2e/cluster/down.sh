#!/usr/bin/env bash
# Stops the local cluster and leaves nothing behind: kubelets, containers and
# their shims, containerd, the nodes' namespaces and mounts, loop devices on
# the nodes' files, cgroups, veths, the bridge, the iptables rules up.sh
# added, the nodes' directories; then stops the control plane and drops its
# etcd data: the replicas the API objects describe went with the nodes'
# directories, so a later `make up` must not find volumes whose data is gone.
# The certificates and kubeconfig stay (`control-plane.sh clean` drops them).
# Safe to run when nothing is up.
#
#   e2e/cluster/down.sh          (make down)
#
# ROAM_DOWN_KEEP_LOGS=1 first copies every node's logs (containerd, kubelet,
# every pod's containers) to $ROAM_CLUSTER_DIR/logs/<time>/: a failed
# `make test` tears its cluster down, so that the next run starts clean, and
# keeps what is needed to see why.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
# shellcheck source=e2e/cluster/lib-net.sh
source "$here/lib-net.sh"
ROAM_LOG_TAG=down

# Loop devices the nodes attached that are still there once every node is
# gone: any whose backing file lies in a node's directories, or is a node
# plugin's FUSE export (/run/roam/csi/fuse/<volume>/volume). A pod still
# running at `make down` keeps its volume's loop device; once the node plugin
# and the node's mount namespace are gone the kernel names that file by its
# path inside the dead FUSE mount: /volume.
detach_leftover_loops() {
    local dev file _
    while read -r dev file _; do
        case "$file" in
            "$ROAM_CLUSTER_DIR"/* | /var/lib/kubelet/* | /var/lib/roam/* | /run/roam/csi/fuse/*/volume | /volume)
                log "detaching $dev ($file)"
                losetup -d "$dev" || true
                ;;
        esac
    done < <(loop_devices)
}

# Copies the nodes' logs out of the directories about to be removed.
keep_logs() {
    local dest node
    [[ -d "$ROAM_CLUSTER_DIR/nodes" ]] || return 0
    dest="$ROAM_CLUSTER_DIR/logs/$(date -u +%Y%m%dT%H%M%SZ)"
    for node in "${ROAM_NODES[@]}"; do
        local dir="$ROAM_CLUSTER_DIR/nodes/$node"
        mkdir -p "$dest/$node"
        cp -r "$dir/logs/." "$dest/$node/" 2>/dev/null || true
        # Pod logs are symlinks into the container runtime's files: copy
        # what they point at.
        cp -rL "$dir/mnt/var/log/pods" "$dest/$node/pods" 2>/dev/null || true
    done
    log "kept the nodes' logs in $dest"
}

main() {
    local begin=$SECONDS node pids=() pid
    [[ "${ROAM_DOWN_KEEP_LOGS:-0}" == 1 ]] && keep_logs
    "$here/faults.sh" stop-proxies >/dev/null 2>&1 || true
    for node in "${ROAM_NODES[@]}"; do
        "$here/node.sh" stop "$node" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || true
    done
    detach_leftover_loops
    net_host_down
    hosts_down
    if [[ -d "$ROAM_CLUSTER_DIR/nodes" ]]; then
        if findmnt -rn -o TARGET | grep -q "^$ROAM_CLUSTER_DIR/nodes"; then
            die "something is still mounted under $ROAM_CLUSTER_DIR/nodes; not removing it"
        fi
        rm -rf "$ROAM_CLUSTER_DIR/nodes"
    fi
    if [[ -x "$here/control-plane.sh" ]]; then
        "$here/control-plane.sh" stop >/dev/null
    fi
    rm -rf "$ROAM_CLUSTER_DIR/etcd"
    log "cluster stopped in $((SECONDS - begin))s"
}

main "$@"

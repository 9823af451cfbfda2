# shellcheck shell=bash
# Loads image tarballs (docker-archive or OCI archive) into the nodes'
# containerd, in the k8s.io namespace the kubelet uses. There is no registry:
# every image a pod uses must be imported this way, and pods must not pull
# (imagePullPolicy IfNotPresent or Never, and a tag other than :latest).
#
#   images_import_node <node> <tarball>...   one node
#   images_import_all <tarball>...           every running node
# The command line form is e2e/cluster/node-images.sh.

images_import_node() {
    local node="$1" tar sock
    shift
    sock="$(node_sock "$node")"
    for tar in "$@"; do
        [[ -f "$tar" ]] || die "image tarball '$tar' does not exist"
        # --no-unpack is absent in containerd 1.6's ctr; import unpacks into
        # the default snapshotter (overlayfs), which the CRI plugin uses.
        ctr --address "$sock" -n k8s.io images import --snapshotter overlayfs "$tar" >/dev/null ||
            die "$node: importing $tar failed"
    done
}

images_import_all() {
    local node pids=() pid failed=0
    for node in "${ROAM_NODES[@]}"; do
        [[ -S "$(node_sock "$node")" ]] || die "node $node is not running (no containerd socket)"
        images_import_node "$node" "$@" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || failed=1
    done
    return $failed
}

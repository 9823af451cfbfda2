#!/usr/bin/env bash
# `make kind-down`: deletes the kind cluster of `make kind-up` (podman
# provider) and checks that nothing of it is left: no node container, no
# node volume; removes kind's podman network once no container uses it.
# The loop device nodes made for the nodes stay (they are only device nodes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cluster="${KIND_CLUSTER:-roam}"
die() {
    echo "kind/down.sh: $*" >&2
    exit 1
}
command -v podman >/dev/null || exit 0
export KIND_EXPERIMENTAL_PROVIDER=podman
# Stop the nodes first, giving systemd in each a minute to shut down
# (kubelet, containerd, the pods' mounts): kind's own `podman rm -f` allows
# 10 s before SIGKILL, and on a loaded machine the killed nodes then did not
# exit within podman's wait, which failed the delete.
nodes="$(podman ps --filter "label=io.x-k8s.kind.cluster=$cluster" --format '{{.Names}}')"
if [[ -n "$nodes" ]]; then
    # shellcheck disable=SC2086 # one name per word
    podman stop --time 60 $nodes >/dev/null
fi
bash "$here/run.sh" delete

left="$(podman ps -a --filter "label=io.x-k8s.kind.cluster=$cluster" --format '{{.Names}}')"
[[ -z "$left" ]] || die "node containers left after kind delete: $left"
volumes="$(podman volume ls --filter "label=io.x-k8s.kind.cluster=$cluster" --format '{{.Name}}')"
if [[ -n "$volumes" ]]; then
    # shellcheck disable=SC2086 # one name per word
    podman volume rm $volumes >/dev/null
fi
if podman network exists kind && [[ -z "$(podman ps -a --filter network=kind --format '{{.Names}}')" ]]; then
    podman network rm kind >/dev/null
fi
echo "kind cluster $cluster deleted; no node container or volume left"

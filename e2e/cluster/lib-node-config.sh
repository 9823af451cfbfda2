# shellcheck shell=bash
# Writes a node's configuration files: containerd, CNI, kubelet. Pure file
# generation from the node's name and the settings in lib-common.sh; called
# by node.sh start, which rewrites them on every start (they are cheap and
# this keeps them in step with the scripts).

PAUSE_IMAGE="roam.local/pause:1.0"

write_containerd_config() {
    local node="$1" dir
    dir="$(node_dir "$node")"
    # Paths under /var/lib and /run are the node's own (bind mounts in its
    # mount namespace); the socket lives in the node directory so that the
    # host can reach it too (ctr, image import).
    cat >"$dir/etc/containerd.toml" <<TOML
version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$(node_sock "$node")"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE, so no process may lower its
  # oom_score_adj: runc fails every pod sandbox (-998) unless scores are
  # clamped to containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/etc/cni/net.d"
TOML
}

write_cni_config() {
    local node="$1" dir
    dir="$(node_dir "$node")"
    mkdir -p "$dir/etc/cni/net.d"
    cat >"$dir/etc/cni/net.d/10-roam.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "roam",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "/var/lib/cni/networks",
        "ranges": [[{ "subnet": "$(node_pod_cidr "$node")" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
JSON
}

write_kubelet_config() {
    local node="$1" dir
    dir="$(node_dir "$node")"
    cat >"$dir/etc/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$(node_ip "$node")"
port: 10250
readOnlyPort: 0
healthzBindAddress: "127.0.0.1"
healthzPort: 10248
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: "$ROAM_CLUSTER_DIR/pki/ca.crt"
authorization:
  mode: Webhook
containerRuntimeEndpoint: "unix://$(node_sock "$node")"
cgroupDriver: cgroupfs
cgroupRoot: "$(node_cgroup_root "$node")"
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
# Debian's containerd 1.6 does not mark the sandbox image as pinned, and
# nothing can pull it again: never collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Three nodes share one disk; evict only when it is really full.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
nodeStatusUpdateFrequency: 5s
# The kubelet asks CSI drivers for their volumes' condition and records an
# abnormal one as an Event on the pod (VolumeConditionAbnormal); the e2e
# suite checks that a broken Roam frontend reaches the pod that way.
featureGates:
  CSIVolumeHealth: true
volumeStatsAggPeriod: 15s
YAML
}

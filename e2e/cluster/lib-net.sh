# shellcheck shell=bash
# The node network: one host bridge, one network namespace per node joined to
# it by a veth pair, static routes between the nodes' pod subnets.
#
#   host:  bridge roam0 = 10.77.0.1/24, routes 10.78.i.0/24 via node i
#   node i (netns roam-dc-x): eth0 = 10.77.0.(10+i)/24, default via 10.77.0.1,
#          routes to the other nodes' pod subnets via their eth0 addresses,
#          cni0 bridge (made by the CNI bridge plugin) = 10.78.i.1/24
#
# Pod-to-pod traffic across nodes goes node to node over the bridge without
# NAT, so a pod sees its peer's real pod address. The control plane listens on
# 127.0.0.1 on the host: a DNAT rule on the bridge (with route_localnet)
# carries 10.77.0.1:<apiserver port> there, so the apiserver needs no other
# bind address. Inside each node, 10.96.0.1:443 (the `kubernetes` Service)
# is DNATed to the same place, so in-cluster clients work without kube-proxy.
#
# Every host-side change is tagged (iptables comment "roam-cluster", interface
# names roam0 / roam-dc-x) so that net_down removes exactly what net_up added.
# Both are idempotent.

ROAM_IPT_COMMENT="roam-cluster"

# The apiserver's secure port on the host, and the Service address in-cluster
# clients are given (first address of the control plane's service range).
ROAM_APISERVER_PORT="${ROAM_APISERVER_PORT:-6443}"
ROAM_KUBERNETES_SERVICE_IP="${ROAM_KUBERNETES_SERVICE_IP:-10.96.0.1}"

# Adds an iptables rule unless it is there already (table, chain, rule...).
ipt_ensure() {
    local table="$1" chain="$2"
    shift 2
    iptables -w -t "$table" -C "$chain" "$@" 2>/dev/null || iptables -w -t "$table" -A "$chain" "$@"
}

# Host side of the network; serialized (nodes start in parallel).
net_host_up() {
    mkdir -p "$ROAM_CLUSTER_DIR/run"
    (
        flock 8
        net_host_up_locked
    ) 8>"$ROAM_CLUSTER_DIR/run/net.lock"
}

net_host_up_locked() {
    if ! ip link show "$ROAM_BRIDGE" >/dev/null 2>&1; then
        ip link add "$ROAM_BRIDGE" type bridge
    fi
    ip addr replace "$ROAM_HOST_IP/24" dev "$ROAM_BRIDGE"
    ip link set "$ROAM_BRIDGE" up
    # Let the bridge's DNAT target 127.0.0.1 (only packets arriving on roam0).
    sysctl -q -w "net.ipv4.conf.$ROAM_BRIDGE.route_localnet=1"
    ipt_ensure nat PREROUTING -i "$ROAM_BRIDGE" -d "$ROAM_HOST_IP" -p tcp --dport "$ROAM_APISERVER_PORT" \
        -m comment --comment "$ROAM_IPT_COMMENT" -j DNAT --to-destination "127.0.0.1:$ROAM_APISERVER_PORT"
}

net_node_up() {
    local node="$1" ns ip other
    ns="$(node_netns "$node")"
    ip="$(node_ip "$node")"
    [[ -e "/run/netns/$ns" ]] || ip netns add "$ns"
    if ! ip link show "$ns" >/dev/null 2>&1; then
        ip link add "$ns" type veth peer name eth0 netns "$ns"
    fi
    ip link set "$ns" master "$ROAM_BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$ROAM_HOST_IP" dev eth0
    ip netns exec "$ns" sysctl -q -w net.ipv4.ip_forward=1
    for other in "${ROAM_NODES[@]}"; do
        [[ "$other" == "$node" ]] && continue
        ip -n "$ns" route replace "$(node_pod_cidr "$other")" via "$(node_ip "$other")" dev eth0
    done
    ip route replace "$(node_pod_cidr "$node")" via "$ip" dev "$ROAM_BRIDGE"

    # In-cluster clients (pods and host-network pods) reach the apiserver
    # through the `kubernetes` Service address.
    local rule=(-d "$ROAM_KUBERNETES_SERVICE_IP" -p tcp --dport 443
        -j DNAT --to-destination "$ROAM_HOST_IP:$ROAM_APISERVER_PORT")
    ip netns exec "$ns" bash -c "$(declare -f ipt_ensure); ipt_ensure nat PREROUTING ${rule[*]}; ipt_ensure nat OUTPUT ${rule[*]}"
}

net_node_down() {
    local node="$1" ns
    ns="$(node_netns "$node")"
    ip route del "$(node_pod_cidr "$node")" 2>/dev/null || true
    ip link del "$ns" 2>/dev/null || true
    if [[ -e "/run/netns/$ns" ]]; then
        ip netns del "$ns"
    fi
}

net_host_down() {
    local rule
    # Delete every rule carrying our comment, in every chain of the nat table.
    while read -r rule; do
        [[ -n "$rule" ]] || continue
        eval "iptables -w -t nat ${rule/-A /-D }"
    done < <(iptables -w -t nat -S | grep -- "--comment $ROAM_IPT_COMMENT" || true)
    if ip link show "$ROAM_BRIDGE" >/dev/null 2>&1; then
        ip link del "$ROAM_BRIDGE"
    fi
    # `ip netns add` turns /run/netns into a mount point of its own and leaves
    # it so; undo that once no namespace is left in it.
    if mountpoint -q /run/netns && [[ -z "$(ls -A /run/netns)" ]]; then
        umount /run/netns && rmdir /run/netns
    fi
}

# The apiserver reaches a kubelet (logs, exec, port-forward) at the first
# node address of the types in --kubelet-preferred-address-types, by default
# Hostname first: for these nodes that is the bare name "dc-a", which no DNS
# knows. When the running apiserver does not prefer InternalIP, the node names
# go into /etc/hosts (lines tagged "# roam-cluster", removed by hosts_down).
apiserver_prefers_internal_ip() {
    local pid
    pid="$(cut -d' ' -f1 "$ROAM_CLUSTER_DIR/run/kube-apiserver.pid" 2>/dev/null)"
    [[ -n "$pid" ]] || return 1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '^--kubelet-preferred-address-types=InternalIP'
}

hosts_up() {
    local node
    apiserver_prefers_internal_ip && return 0
    for node in "${ROAM_NODES[@]}"; do
        grep -q "^$(node_ip "$node") $node # roam-cluster$" /etc/hosts ||
            echo "$(node_ip "$node") $node # roam-cluster" >>/etc/hosts
    done
}

hosts_down() {
    grep -q ' # roam-cluster$' /etc/hosts || return 0
    # Rewrite in place (keeps the file's inode, owner and mode).
    local kept
    kept="$(grep -v ' # roam-cluster$' /etc/hosts)"
    printf '%s\n' "$kept" >/etc/hosts
}

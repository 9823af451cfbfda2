#!/usr/bin/env bash
# Network faults between the local cluster's nodes (data centers).
#
#   faults.sh partition <a> <b>          drop all traffic between a and b
#   faults.sh heal <a> <b>               undo one partition
#   faults.sh delay <from> <to>:<port> <ms>
#                                        TCP connections from node <from> to
#                                        <to>:<port> go through a delay proxy
#                                        that holds every byte <ms> ms in each
#                                        direction (round trip +2*<ms>); <to> is
#                                        a node name or an IP (e.g. a pod's)
#   faults.sh undelay <from> <to>:<port> remove that delay
#   faults.sh heal-all                   remove every partition and delay
#   faults.sh status                     list the faults in place
#   faults.sh stop-proxies               heal-all, then stop the delay proxy
#
# <a>, <b>, <from> are dc-a, dc-b, dc-c, or control-plane (the host, where the
# apiserver is) for partitions.
#
# How: a partition is a set of DROP rules in a chain ROAM-FAULTS hooked into
# INPUT, OUTPUT and FORWARD inside each node's network namespace, matching the
# other side's node address and pod subnet, so host-network pods and ordinary
# pods are cut alike. The kernel here has no netem qdisc, so a delay is a
# user-space proxy (toxiproxy, pinned in e2e/tools/versions.env) on the host
# bridge address, and a DNAT rule in <from>'s namespace that sends
# connections for <to>:<port> through it. Connections already open keep
# their path; the peer sees the proxy's address as the source. All of it
# lives in the nodes' namespaces and in one host process, so `make down`
# removes it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=e2e/cluster/lib-common.sh
source "$here/lib-common.sh"
ROAM_LOG_TAG=faults

CHAIN="ROAM-FAULTS"
TOXIPROXY_API="127.0.0.1:18474"
faults_dir="$ROAM_CLUSTER_DIR/faults"

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
}

in_node() {
    local node="$1"
    shift
    [[ -e "/run/netns/$(node_netns "$node")" ]] || die "node $node is not running"
    ip netns exec "$(node_netns "$node")" "$@"
}

# The addresses that stand for a side: a node's address and pod subnet, or the
# host's bridge address for the control plane.
side_addresses() {
    case "$1" in
        control-plane) echo "$ROAM_HOST_IP" ;;
        *) echo "$(node_ip "$1") $(node_pod_cidr "$1")" ;;
    esac
}

ensure_chain() {
    local node="$1" hook
    in_node "$node" iptables -w -N "$CHAIN" 2>/dev/null || true
    for hook in INPUT OUTPUT FORWARD; do
        in_node "$node" iptables -w -C "$hook" -j "$CHAIN" 2>/dev/null ||
            in_node "$node" iptables -w -I "$hook" -j "$CHAIN"
    done
}

# drop_rules <node> <other> <-A|-D>: the DROP rules cutting <node> off <other>.
drop_rules() {
    local node="$1" other="$2" op="$3" addr
    for addr in $(side_addresses "$other"); do
        for dir in -s -d; do
            if [[ "$op" == -A ]]; then
                in_node "$node" iptables -w -C "$CHAIN" "$dir" "$addr" -m comment --comment "partition:$other" -j DROP 2>/dev/null ||
                    in_node "$node" iptables -w -A "$CHAIN" "$dir" "$addr" -m comment --comment "partition:$other" -j DROP
            else
                while in_node "$node" iptables -w -D "$CHAIN" "$dir" "$addr" -m comment --comment "partition:$other" -j DROP 2>/dev/null; do :; done
            fi
        done
    done
}

check_side() {
    [[ "$1" == control-plane ]] && return 0
    node_index "$1" >/dev/null || exit 2
}

cmd_partition() {
    local a="$1" b="$2"
    check_side "$a"
    check_side "$b"
    [[ "$a" != "$b" ]] || die "cannot partition $a from itself"
    [[ "$a" == control-plane && "$b" == control-plane ]] && die "name at least one node"
    if [[ "$a" != control-plane ]]; then
        ensure_chain "$a"
        drop_rules "$a" "$b" -A
    fi
    if [[ "$b" != control-plane ]]; then
        ensure_chain "$b"
        drop_rules "$b" "$a" -A
    fi
    log "partitioned $a | $b"
}

cmd_heal() {
    local a="$1" b="$2"
    check_side "$a"
    check_side "$b"
    [[ "$a" == control-plane ]] || drop_rules "$a" "$b" -D
    [[ "$b" == control-plane ]] || drop_rules "$b" "$a" -D
    log "healed $a | $b"
}

toxiproxy_pid() { node_pid_file "$faults_dir/toxiproxy.pid"; }
node_pid_file() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1")"
    pid_alive "$pid" && pid_runs "$pid" toxiproxy-server && echo "$pid"
}

ensure_toxiproxy() {
    toxiproxy_pid >/dev/null && return 0
    command -v toxiproxy-server >/dev/null || die "toxiproxy-server is missing: run make tools"
    mkdir -p "$faults_dir" "$ROAM_CLUSTER_DIR/logs"
    # shellcheck disable=SC2016
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$faults_dir/toxiproxy.pid" \
        toxiproxy-server -host "${TOXIPROXY_API%:*}" -port "${TOXIPROXY_API#*:}" \
        </dev/null >>"$ROAM_CLUSTER_DIR/logs/toxiproxy.log" 2>&1 &
    wait_for 10 curl -sf "http://$TOXIPROXY_API/version" || die "toxiproxy did not start (log: $ROAM_CLUSTER_DIR/logs/toxiproxy.log)"
}

api() {
    local method="$1" path="$2" body="${3:-}"
    curl -sf -X "$method" -H 'Content-Type: application/json' ${body:+--data "$body"} "http://$TOXIPROXY_API$path"
}

# parse_target <to>:<port> -> "<ip> <port>"
parse_target() {
    local to="${1%:*}" port="${1##*:}"
    [[ "$1" == *:* && "$port" =~ ^[0-9]+$ ]] || die "target '$1' must be <node-or-ip>:<port>"
    if [[ "$to" =~ ^[0-9.]+$ ]]; then
        echo "$to $port"
    else
        echo "$(node_ip "$to") $port"
    fi
}

delay_name() { echo "$1-to-${2//[.:]/_}"; }

dnat_rule() {
    local ip="$1" port="$2" listen="$3"
    echo "-d $ip/32 -p tcp -m tcp --dport $port -m comment --comment roam-delay -j DNAT --to-destination $listen"
}

cmd_delay() {
    local from="$1" target="$2" ms="$3" ip port name listen
    node_index "$from" >/dev/null || exit 2
    [[ "$ms" =~ ^[0-9]+$ ]] || die "delay '$ms' must be a whole number of milliseconds"
    read -r ip port < <(parse_target "$target")
    name="$(delay_name "$from" "$ip:$port")"
    ensure_toxiproxy
    if [[ -f "$faults_dir/$name.listen" ]]; then
        listen="$(cat "$faults_dir/$name.listen")"
        api DELETE "/proxies/$name/toxics/latency-up" >/dev/null || true
        api DELETE "/proxies/$name/toxics/latency-down" >/dev/null || true
    else
        local n=0
        while grep -qx "$ROAM_HOST_IP:$((21000 + n))" "$faults_dir"/*.listen 2>/dev/null; do
            n=$((n + 1))
        done
        listen="$ROAM_HOST_IP:$((21000 + n))"
        api POST /proxies "{\"name\":\"$name\",\"listen\":\"$listen\",\"upstream\":\"$ip:$port\",\"enabled\":true}" >/dev/null ||
            die "toxiproxy refused proxy $name ($listen -> $ip:$port)"
        echo "$listen" >"$faults_dir/$name.listen"
        echo "$from" >"$faults_dir/$name.from"
        echo "$ip:$port" >"$faults_dir/$name.upstream"
        # shellcheck disable=SC2046
        in_node "$from" iptables -w -t nat -I OUTPUT $(dnat_rule "$ip" "$port" "$listen")
        # shellcheck disable=SC2046
        in_node "$from" iptables -w -t nat -I PREROUTING $(dnat_rule "$ip" "$port" "$listen")
    fi
    local stream
    for stream in up down; do
        api POST "/proxies/$name/toxics" \
            "{\"name\":\"latency-$stream\",\"type\":\"latency\",\"stream\":\"${stream}stream\",\"toxicity\":1,\"attributes\":{\"latency\":$ms,\"jitter\":0}}" >/dev/null ||
            die "toxiproxy refused the latency on $name"
    done
    echo "$ms" >"$faults_dir/$name.ms"
    log "delay ${ms}ms each way: $from -> $ip:$port (via $listen)"
}

remove_delay() {
    local name="$1" from listen upstream ip port
    from="$(cat "$faults_dir/$name.from")"
    listen="$(cat "$faults_dir/$name.listen")"
    upstream="$(cat "$faults_dir/$name.upstream" 2>/dev/null || true)"
    if [[ -n "$upstream" && -e "/run/netns/$(node_netns "$from")" ]]; then
        ip="${upstream%:*}"
        port="${upstream##*:}"
        # shellcheck disable=SC2046
        in_node "$from" iptables -w -t nat -D OUTPUT $(dnat_rule "$ip" "$port" "$listen") 2>/dev/null || true
        # shellcheck disable=SC2046
        in_node "$from" iptables -w -t nat -D PREROUTING $(dnat_rule "$ip" "$port" "$listen") 2>/dev/null || true
    fi
    api DELETE "/proxies/$name" >/dev/null || true
    rm -f "$faults_dir/$name".{listen,from,upstream,ms}
}

cmd_undelay() {
    local from="$1" ip port name
    node_index "$from" >/dev/null || exit 2
    read -r ip port < <(parse_target "$2")
    name="$(delay_name "$from" "$ip:$port")"
    [[ -f "$faults_dir/$name.listen" ]] || die "no delay from $from to $ip:$port"
    remove_delay "$name"
    log "removed delay $from -> $ip:$port"
}

cmd_heal_all() {
    local node f
    for node in "${ROAM_NODES[@]}"; do
        [[ -e "/run/netns/$(node_netns "$node")" ]] || continue
        in_node "$node" iptables -w -F "$CHAIN" 2>/dev/null || true
    done
    for f in "$faults_dir"/*.listen; do
        [[ -f "$f" ]] || continue
        if toxiproxy_pid >/dev/null; then
            remove_delay "$(basename "$f" .listen)"
        else
            rm -f "${f%.listen}".{listen,from,upstream,ms}
        fi
    done
    log "all faults removed"
}

cmd_status() {
    local node f
    for node in "${ROAM_NODES[@]}"; do
        [[ -e "/run/netns/$(node_netns "$node")" ]] || continue
        in_node "$node" iptables -w -S "$CHAIN" 2>/dev/null | grep -o 'partition:[a-z-]*' | sort -u |
            sed "s/^partition:/$node | /" || true
    done
    for f in "$faults_dir"/*.listen; do
        [[ -f "$f" ]] || continue
        local name="${f%.listen}"
        echo "$(cat "$name.from") -> $(cat "$name.upstream"): +$(cat "$name.ms")ms each way (via $(cat "$f"))"
    done
}

cmd_stop_proxies() {
    cmd_heal_all
    local pid
    if pid="$(toxiproxy_pid)"; then
        kill -TERM "$pid"
        wait_until_dead 10 "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -rf "$faults_dir"
}

case "${1:-}" in
    partition) (($# == 3)) || usage; cmd_partition "$2" "$3" ;;
    heal) (($# == 3)) || usage; cmd_heal "$2" "$3" ;;
    delay) (($# == 4)) || usage; cmd_delay "$2" "$3" "$4" ;;
    undelay) (($# == 3)) || usage; cmd_undelay "$2" "$3" ;;
    heal-all) cmd_heal_all ;;
    status) cmd_status ;;
    stop-proxies) cmd_stop_proxies ;;
    *) usage ;;
esac

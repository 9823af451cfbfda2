#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, for tests and the local cluster.
#
# Usage:
#   e2e/cluster/control-plane.sh start      start (no-op when already healthy);
#                                           waits until the API server is ready
#   e2e/cluster/control-plane.sh stop       stop every component it started
#   e2e/cluster/control-plane.sh status     exit 0 when all components are healthy
#   e2e/cluster/control-plane.sh clean      stop, then delete all cluster state
#   e2e/cluster/control-plane.sh kubeconfig USER GROUP OUT
#                                           mint a client certificate for USER in
#                                           GROUP ("" for none), signed by the
#                                           cluster CA, and write a kubeconfig to
#                                           OUT (kubelets: system:node:<name> in
#                                           system:nodes)
#
# Components, all built from the pinned versions in e2e/tools/versions.env
# (run e2e/tools/install.sh first) and taken from <repo>/.tools/bin:
#   etcd                      http://127.0.0.1:12379 (peer 12380), --unsafe-no-fsync
#   kube-apiserver            https://$ROAM_APISERVER_BIND:6443, real TLS,
#                             authorization Node,RBAC
#   kube-controller-manager   https://127.0.0.1:10257, signs CSRs with the cluster
#                             CA, allocates node pod CIDRs from 10.244.0.0/16
#   kube-scheduler            https://127.0.0.1:10259
# Services get addresses from 10.96.0.0/16 (the API server is 10.96.0.1).
#
# State lives in $ROAM_CLUSTER_DIR (default <repo>/.cluster):
#   kubeconfig                admin kubeconfig (user "admin" in system:masters);
#                             the path is fixed, certificates are embedded
#   logs/<component>.log      each component's output
#   run/<component>.pid       pids of the running components
#   etcd/                     etcd's data (kept across stop/start; `clean` drops it)
#   kubeconfigs/              the controller manager's and scheduler's kubeconfigs
#   pki/ca.crt, pki/ca.key    the cluster CA (EC P-256, made with openssl); it
#                             signs every certificate below and is the API
#                             server's --client-ca-file, so any client cert it
#                             signs authenticates as CN=user, O=group
#   pki/apiserver.crt|key     the API server's serving certificate (SANs:
#                             localhost, kubernetes.default.svc[.cluster.local],
#                             127.0.0.1, 10.96.0.1 and $ROAM_APISERVER_SANS)
#   pki/admin.crt|key         CN=admin, O=system:masters
#   pki/apiserver-kubelet-client.crt|key
#                             the API server's client cert towards kubelets
#                             (logs, exec), CN=kube-apiserver-kubelet-client,
#                             O=system:masters
#   pki/sa.key, pki/sa.pub    service account token signing key pair (RSA)
#   pki/controller-manager.*, pki/scheduler.*
#                             those components' client certificates
#   pki/clients/<user>.crt|key
#                             certificates minted by `kubeconfig` (":" in the
#                             user name becomes "_")
#
# Environment:
#   ROAM_CLUSTER_DIR          where the state lives (see above)
#   ROAM_APISERVER_BIND       address the API server listens on (127.0.0.1); set
#                             0.0.0.0 to reach it from other network namespaces
#   ROAM_APISERVER_ADVERTISE  address published as the `kubernetes` Service's
#                             endpoint (default: the bind address, or 127.0.0.1
#                             for 0.0.0.0); a loopback address publishes none
#   ROAM_APISERVER_SANS       extra IP addresses for the serving certificate,
#                             comma-separated (the certificate is reissued when
#                             this changes)
#   ROAM_APISERVER_URL        server URL written by `kubeconfig` (default
#                             https://127.0.0.1:6443)
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster_dir=${ROAM_CLUSTER_DIR:-$repo/.cluster}
mkdir -p "$cluster_dir"
cluster_dir=$(cd "$cluster_dir" && pwd)
tools=$repo/.tools/bin

# shellcheck source=cp-pki.sh
source "$repo/e2e/cluster/cp-pki.sh"
# shellcheck source=cp-process.sh
source "$repo/e2e/cluster/cp-process.sh"

pki=$cluster_dir/pki
logs=$cluster_dir/logs
run=$cluster_dir/run

etcd_port=12379
etcd_peer_port=12380
apiserver_port=6443
controller_manager_port=10257
scheduler_port=10259
service_cidr=10.96.0.0/16
service_ip=10.96.0.1
cluster_cidr=10.244.0.0/16

bind=${ROAM_APISERVER_BIND:-127.0.0.1}
if [[ -n ${ROAM_APISERVER_ADVERTISE:-} ]]; then
	advertise=$ROAM_APISERVER_ADVERTISE
elif [[ $bind == 0.0.0.0 ]]; then
	advertise=127.0.0.1
else
	advertise=$bind
fi
local_url=https://127.0.0.1:$apiserver_port
[[ $bind == 0.0.0.0 || $bind == 127.0.0.1 ]] || local_url=https://$bind:$apiserver_port

components=(etcd kube-apiserver kube-controller-manager kube-scheduler)

die() {
	echo "control-plane.sh: $*" >&2
	exit 1
}

need_tools() {
	local c
	for c in "${components[@]}"; do
		[[ -x $tools/$c ]] || die "$tools/$c is missing: run e2e/tools/install.sh first"
	done
}

# healthy_url URL: 0 when URL answers "ok" (authenticated as admin).
healthy_url() {
	local out
	out=$(curl -s --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$1" 2>/dev/null) || return 1
	[[ $out == ok ]]
}

component_healthy() {
	case $1 in
	etcd) curl -s --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"' ;;
	kube-apiserver) healthy_url "$local_url/readyz" ;;
	# These serve with self-signed certificates of their own; /healthz is open
	# to anonymous requests.
	kube-controller-manager) [[ $(curl -sk --max-time 2 "https://127.0.0.1:$controller_manager_port/healthz" 2>/dev/null) == ok ]] ;;
	kube-scheduler) [[ $(curl -sk --max-time 2 "https://127.0.0.1:$scheduler_port/healthz" 2>/dev/null) == ok ]] ;;
	esac
}

all_healthy() {
	local c
	for c in "${components[@]}"; do
		running "$c" && component_healthy "$c" || return 1
	done
}

# fail_start COMPONENT MESSAGE: shows the end of COMPONENT's log, stops what
# was started, and exits.
fail_start() {
	tail -n 20 "$logs/$1.log" >&2 || true
	stop_all
	die "$2 (log: $logs/$1.log); stopped the control plane"
}

# wait_healthy COMPONENT SECONDS
wait_healthy() {
	local c=$1 deadline=$((SECONDS + $2))
	until component_healthy "$c"; do
		if ! running "$c"; then
			fail_start "$c" "$c exited during start-up"
		fi
		if ((SECONDS >= deadline)); then
			fail_start "$c" "$c not healthy after $2s"
		fi
		sleep 0.2
	done
}

start_etcd() {
	mkdir -p "$cluster_dir/etcd"
	chmod 700 "$cluster_dir/etcd"
	launch etcd "$tools/etcd" \
		--name=roam \
		--data-dir="$cluster_dir/etcd" \
		--listen-client-urls="http://127.0.0.1:$etcd_port" \
		--advertise-client-urls="http://127.0.0.1:$etcd_port" \
		--listen-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
		--initial-cluster="roam=http://127.0.0.1:$etcd_peer_port" \
		--unsafe-no-fsync \
		--log-level=warn
}

start_apiserver() {
	local reconciler=lease
	# Endpoints may not hold loopback addresses: publish none in that case.
	[[ $advertise == 127.* ]] && reconciler=none
	# No --requestheader-* (API aggregation): nothing here serves an aggregated
	# API. The controller manager and scheduler then log "missing content for
	# CA bundle requestheader-client-ca-file" now and then; that is harmless.
	launch kube-apiserver "$tools/kube-apiserver" \
		--etcd-servers="http://127.0.0.1:$etcd_port" \
		--bind-address="$bind" \
		--secure-port="$apiserver_port" \
		--advertise-address="$advertise" \
		--endpoint-reconciler-type="$reconciler" \
		--cert-dir="$pki/generated" \
		--tls-cert-file="$pki/apiserver.crt" \
		--tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" \
		--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
		--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
		--authorization-mode=Node,RBAC \
		--enable-admission-plugins=NodeRestriction \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" \
		--service-cluster-ip-range="$service_cidr" \
		--allow-privileged=true \
		--kubelet-preferred-address-types=InternalIP,Hostname \
		--profiling=false \
		--v=1
}

start_controller_manager() {
	local kc=$cluster_dir/kubeconfigs/controller-manager.kubeconfig
	launch kube-controller-manager "$tools/kube-controller-manager" \
		--kubeconfig="$kc" \
		--authentication-kubeconfig="$kc" \
		--authorization-kubeconfig="$kc" \
		--bind-address=127.0.0.1 \
		--secure-port="$controller_manager_port" \
		--service-account-private-key-file="$pki/sa.key" \
		--root-ca-file="$pki/ca.crt" \
		--cluster-signing-cert-file="$pki/ca.crt" \
		--cluster-signing-key-file="$pki/ca.key" \
		--use-service-account-credentials=true \
		--allocate-node-cidrs=true \
		--cluster-cidr="$cluster_cidr" \
		--node-cidr-mask-size=24 \
		--service-cluster-ip-range="$service_cidr" \
		--cluster-name=roam \
		--leader-elect=false \
		--profiling=false \
		--v=1
}

start_scheduler() {
	local kc=$cluster_dir/kubeconfigs/scheduler.kubeconfig
	launch kube-scheduler "$tools/kube-scheduler" \
		--kubeconfig="$kc" \
		--authentication-kubeconfig="$kc" \
		--authorization-kubeconfig="$kc" \
		--bind-address=127.0.0.1 \
		--secure-port="$scheduler_port" \
		--leader-elect=false \
		--profiling=false \
		--v=1
}

# need_free_ports: dies, naming the holder, when a port of ours is taken by a
# process this state directory did not start: most often the control plane of
# another clone's cluster, left up by a run that failed or was interrupted.
# Starting beside it would fail later and less clearly, or talk to its etcd.
need_free_ports() {
	local port line pid cmd
	for port in "$etcd_port" "$etcd_peer_port" "$apiserver_port" "$controller_manager_port" "$scheduler_port"; do
		line=$(ss -ltnpH "sport = :$port" 2>/dev/null | head -n 1)
		[[ -n $line ]] || continue
		pid=$(sed -n 's/.*pid=\([0-9]*\).*/\1/p' <<<"$line")
		cmd=$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-200)
		die "port $port is held by pid $pid ($cmd). Another local cluster is probably up: stop it with 'make down' in its clone (or that clone's e2e/cluster/down.sh with its ROAM_CLUSTER_DIR) and start again"
	done
}

cmd_start() {
	need_tools
	local settings="bind=$bind advertise=$advertise sans=${ROAM_APISERVER_SANS:-}"
	if all_healthy && [[ -f $run/settings && $(<"$run/settings") == "$settings" ]]; then
		echo "control plane already running"
		print_usage
		return
	fi
	local begin=$SECONDS
	# Something is missing, unhealthy or set up differently: restart all of
	# it, keeping etcd's data.
	stop_all
	need_free_ports
	echo "$settings" >"$run/settings"
	ensure_pki
	mkdir -p "$cluster_dir/kubeconfigs"
	write_client_kubeconfig system:kube-controller-manager "" "$local_url" "$cluster_dir/kubeconfigs/controller-manager.kubeconfig" "$pki/controller-manager"
	write_client_kubeconfig system:kube-scheduler "" "$local_url" "$cluster_dir/kubeconfigs/scheduler.kubeconfig" "$pki/scheduler"
	write_kubeconfig admin "$local_url" "$pki/admin.crt" "$pki/admin.key" "$cluster_dir/kubeconfig"

	start_etcd
	wait_healthy etcd 30
	start_apiserver
	wait_healthy kube-apiserver 90
	start_controller_manager
	start_scheduler
	wait_healthy kube-controller-manager 60
	wait_healthy kube-scheduler 60
	echo "control plane started in $((SECONDS - begin))s"
	print_usage
}

print_usage() {
	cat <<EOF
  kubeconfig: $cluster_dir/kubeconfig
  try:        KUBECONFIG=$cluster_dir/kubeconfig $tools/kubectl get --raw /readyz
  logs:       $logs/
EOF
}

cmd_status() {
	local c rc=0 state
	for c in "${components[@]}"; do
		if ! running "$c"; then
			state=stopped
			rc=1
		elif component_healthy "$c"; then
			state="running (pid $(pid_of "$c"))"
		else
			state="unhealthy (pid $(pid_of "$c"))"
			rc=1
		fi
		printf '%-24s %s\n' "$c" "$state"
	done
	return $rc
}

cmd_kubeconfig() {
	(($# == 3)) || die "usage: control-plane.sh kubeconfig USER GROUP OUT"
	ensure_pki
	local url=${ROAM_APISERVER_URL:-$local_url}
	local base
	base=$(printf '%s' "$1" | tr -c 'A-Za-z0-9.-' '_')
	mkdir -p "$pki/clients"
	write_client_kubeconfig "$1" "$2" "$url" "$3" "$pki/clients/$base"
	echo "wrote $3 for user $1${2:+ in group $2}"
}

main() {
	local cmd=${1:-} c
	shift || true
	mkdir -p "$logs" "$run"
	# One command at a time per cluster directory: parallel test binaries that all
	# call `start` wait here, and all but the first find it running.
	exec 9>"$run/lock"
	flock 9
	case $cmd in
	start) cmd_start ;;
	stop)
		stop_all
		echo "control plane stopped"
		;;
	status) cmd_status ;;
	clean)
		stop_all
		rm -rf "$cluster_dir/etcd" "$pki" "$cluster_dir/kubeconfigs" "$cluster_dir/kubeconfig" "$run/settings"
		for c in "${components[@]}"; do rm -f "$logs/$c.log"; done
		echo "control plane state removed from $cluster_dir"
		;;
	kubeconfig) cmd_kubeconfig "$@" ;;
	*) die "usage: control-plane.sh start|stop|status|clean|kubeconfig USER GROUP OUT" ;;
	esac
}

main "$@"

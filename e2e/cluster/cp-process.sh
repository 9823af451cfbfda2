# shellcheck shell=bash disable=SC2154 # $run, $logs, $components come from control-plane.sh
# Starting, finding and stopping the control plane's processes.
# Sourced by control-plane.sh, which sets $run, $logs and $components.
#
# Each component runs in its own session (setsid), detached from the caller's
# terminal and pipes: a test that runs `control-plane.sh start` and reads its
# output must not wait for the components to exit. Its pid is in
# run/<component>.pid with the binary's path; a pid counts only while
# /proc/<pid>/exe is still that binary, so a stale pid file never makes `stop`
# kill an unrelated process.

# launch NAME BINARY ARGS...: starts BINARY in the background, output appended
# to logs/NAME.log.
launch() {
	local name=$1 binary=$2
	shift 2
	{
		echo
		echo "=== $(date -u +%FT%TZ) starting $name"
	} >>"$logs/$name.log"
	# fd 9 holds control-plane.sh's lock: the component must not inherit it.
	setsid "$binary" "$@" </dev/null >>"$logs/$name.log" 2>&1 9>&- &
	local pid=$! exe
	exe=$(readlink -f "$binary")
	echo "$pid $exe" >"$run/$name.pid"
	# Until the forked shell has exec'd the binary, /proc/<pid>/exe is still
	# bash or setsid and pid_of would report the component as not running: a
	# caller that checks right away (wait_healthy) would take a starting
	# component for one that died. Wait for the exec, or for the process to
	# be gone, which the caller then reports with the log.
	local deadline=$((SECONDS + 10)) actual
	while actual=$(readlink "/proc/$pid/exe" 2>/dev/null); do
		[[ ${actual% (deleted)} == "$exe" ]] && return 0
		((SECONDS < deadline)) || return 0
		sleep 0.05
	done
}

# pid_of NAME: the pid of a running component, or nothing.
pid_of() {
	local file=$run/$1.pid pid exe
	[[ -f $file ]] || return 0
	read -r pid exe <"$file" || return 0
	[[ -n $pid && -n $exe ]] || return 0
	local actual
	actual=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 0
	# A binary replaced by a rebuild while it runs shows as "<path> (deleted)".
	[[ ${actual% (deleted)} == "$exe" ]] && echo "$pid"
	return 0
}

running() {
	[[ -n $(pid_of "$1") ]]
}

# How long a component may take to exit after SIGTERM. kube-apiserver waits
# for open watch streams (kubelets, tests) to end before it exits, which can
# take a minute; its state is in etcd, which is stopped after it, so cutting
# that short loses nothing.
stop_grace_seconds=5

# stop_one NAME: SIGTERM, up to $stop_grace_seconds to exit, then SIGKILL.
stop_one() {
	local name=$1 pid deadline
	pid=$(pid_of "$name")
	if [[ -n $pid ]]; then
		kill -TERM "$pid" 2>/dev/null || true
		deadline=$((SECONDS + stop_grace_seconds))
		while [[ -n $(pid_of "$name") ]] && ((SECONDS < deadline)); do sleep 0.1; done
		if [[ -n $(pid_of "$name") ]]; then
			echo "$name still running ${stop_grace_seconds}s after SIGTERM: killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
			while [[ -n $(pid_of "$name") ]]; do sleep 0.1; done
		fi
	fi
	rm -f "$run/$name.pid"
}

# stop_all: stops the components in the reverse order of start.
stop_all() {
	local i
	for ((i = ${#components[@]} - 1; i >= 0; i--)); do
		stop_one "${components[i]}"
	done
}

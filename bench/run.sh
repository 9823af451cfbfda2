#!/usr/bin/env bash
# Data-path benchmarks: fio on a mounted filesystem, every case side by side
# in one run, then bench/results/latest.json and the table in
# docs/benchmarks.md (bench/summarize.py).
#
# Cases (each: 4K write+O_DSYNC at depth 1, 4K random read at depth 16,
# 1 MiB sequential write at depth 4; BENCH_RUNTIME seconds per job):
#   local-limit       ext4 on a loop device (direct I/O) over a plain file
#   roam-frontend     ext4 on Roam's FUSE -> loop stack over a plain file
#                     (the frontend's own ceiling, no journal, no replication)
#   roam-local        ext4 on Roam's stack over an in-process replica (the
#                     engine's journal and real volume; primary on this node)
#   roam-sync-2dc, roam-async-2dc, roam-sync-3dc
#                     ext4 on Roam's stack against `roam-csi storage`
#                     processes, one per data center in its own network
#                     namespace, with a delay proxy in front of each peer
#   gluster-replica2  GlusterFS replica 2, both bricks on this host
# Replicated cases run at 0 ms and again at BENCH_DELAY_RTT_MS added RTT.
#
# Needs root, fio, losetup, mkfs.ext4, nftables-free networking (ip netns),
# glusterfs-server (optional). BENCH_SKIP_BUILD=1 uses the release binaries
# already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${BENCH_RUNTIME:-15}
FILE_MB=${BENCH_FILE_MB:-256}
VOLUME_BYTES=${BENCH_VOLUME_BYTES:-$((512 << 20))}
DELAY_RTT_MS=${BENCH_DELAY_RTT_MS:-2}
RAW=bench/results/raw
WORK=$(mktemp -d /tmp/rbench.XXXXXX)
BIN=target/release
mkdir -p "$RAW"
# BENCH_ONLY="case_x case_y" runs only those steps and keeps earlier results.
[ -n "${BENCH_ONLY:-}" ] || rm -f "$RAW"/*.json "$RAW"/*.skip "$RAW"/*.txt

log() { echo "[bench $(date +%T)] $*" >&2; }

PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for m in $(grep -o "$WORK[^ ]*" /proc/mounts | sort -r); do umount "$m" 2>/dev/null || umount -l "$m"; done
  for dev in $(losetup -j "$WORK/local.img" -O NAME -n 2>/dev/null); do losetup -d "$dev"; done
  declare -F gluster_down >/dev/null && gluster_down
  declare -F roam_cluster_down >/dev/null && roam_cluster_down
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release -p roam-csi --bins >&2
fi

# fio_case CASE RTT_MS MOUNT: three jobs, JSON into $RAW/CASE@RTT.{wf,rr,sw}.json
fio_case() {
  local case=$1 rtt=$2 mnt=$3 base="$RAW/$1@$2"
  local common=(--directory="$mnt" --size="${FILE_MB}M" --runtime="$RUNTIME" --time_based
                --ramp_time=2 --output-format=json --group_reporting)
  log "$case @ ${rtt} ms: 4k write+dsync"
  fio --name=wf --rw=randwrite --bs=4k --ioengine=psync --direct=1 --sync=dsync \
      --iodepth=1 "${common[@]}" >"$base.wf.json"
  rm -f "$mnt"/wf.*
  log "$case @ ${rtt} ms: 4k random read"
  fio --name=rr --rw=randread --bs=4k --ioengine=libaio --direct=1 --iodepth=16 \
      "${common[@]}" >"$base.rr.json"
  rm -f "$mnt"/rr.*
  log "$case @ ${rtt} ms: 1M sequential write"
  fio --name=sw --rw=write --bs=1m --ioengine=libaio --direct=1 --iodepth=4 --end_fsync=1 \
      "${common[@]}" >"$base.sw.json"
  rm -f "$mnt"/wf.* "$mnt"/rr.* "$mnt"/sw.*
}

skip() { echo "$3" >"$RAW/$1@$2.skip"; log "skip $1 @ $2 ms: $3"; }

case_local_limit() {
  local img="$WORK/local.img" mnt="$WORK/local-mnt" dev
  truncate -s "$VOLUME_BYTES" "$img"
  dev=$(losetup --find --show --direct-io=on "$img")
  mkfs.ext4 -q -E nodiscard "$dev"
  mkdir -p "$mnt" && mount -o noatime "$dev" "$mnt"
  fio_case local-limit 0 "$mnt"
  umount "$mnt"; losetup -d "$dev"
}

# stage_roam MOUNT ARGS...: runs roam-frontend in the background (its pid
# in FRONTEND_PID) until unstage_roam; waits for its "ready".
FRONTEND_PID=
stage_roam() {
  local mnt=$1; shift
  local out="$WORK/frontend-$RANDOM.out"
  "$BIN/roam-frontend" --volume bench --mount "$mnt" --work "$mnt.work" "$@" >"$out" 2>&1 &
  FRONTEND_PID=$!
  PIDS+=("$FRONTEND_PID")
  for _ in $(seq 1 300); do
    grep -q '^ready' "$out" && return 0
    kill -0 "$FRONTEND_PID" 2>/dev/null || { cat "$out" >&2; return 1; }
    sleep 0.1
  done
  cat "$out" >&2; return 1
}

# Stops roam-frontend and waits until it has torn the stack down.
unstage_roam() {
  [ -n "$FRONTEND_PID" ] || return 0
  kill -TERM "$FRONTEND_PID" 2>/dev/null || true
  wait "$FRONTEND_PID" 2>/dev/null || true
  FRONTEND_PID=
}

case_roam_frontend() {
  local mnt="$WORK/frontend-mnt" pid
  stage_roam "$mnt" --file "$WORK/frontend.img" --size "$VOLUME_BYTES"
  fio_case roam-frontend 0 "$mnt"
  unstage_roam
}

case_roam_local() {
  local mnt="$WORK/roam-local-mnt" pid
  stage_roam "$mnt" --local-dir "$WORK/roam-local" --size "$VOLUME_BYTES"
  fio_case roam-local 0 "$mnt"
  unstage_roam
}

# A private network for the storage systems: bridge $RB_BRIDGE at
# $RB_NET.1, namespace rbench-<i> at $RB_NET.(10+i), each storage system
# on :7100 with a delay proxy on :7101 that its peers use.
RB_BRIDGE=roambr$$
RB_BRIDGE=${RB_BRIDGE:0:15}
RB_NET=10.231.77
RB_NODES=0
RB_PIDS=()

roam_cluster_up() {
  local n=$1 delay_us=$2 i ns ip
  ip link add "$RB_BRIDGE" type bridge
  ip addr add "$RB_NET.1/24" dev "$RB_BRIDGE"
  ip link set "$RB_BRIDGE" up
  for i in $(seq 0 $((n - 1))); do
    ns=rbench-$i ip=$RB_NET.$((10 + i))
    ip netns add "$ns"
    RB_NODES=$((i + 1))
    ip link add "rbv$$h$i" type veth peer name "rbv$$n$i"
    ip link set "rbv$$h$i" master "$RB_BRIDGE" up
    ip link set "rbv$$n$i" netns "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr add "$ip/24" dev "rbv$$n$i"
    ip netns exec "$ns" ip link set "rbv$$n$i" up
    mkdir -p "$WORK/rdata-$i"
    ip netns exec "$ns" "$BIN/roam-delay-proxy" --listen "$ip:7101" \
      --upstream 127.0.0.1:7100 --delay-us "$delay_us" 2>/dev/null &
    RB_PIDS+=($!)
    ip netns exec "$ns" "$BIN/roam-csi" storage --data-dir "$WORK/rdata-$i" \
      --listen 0.0.0.0:7100 --advertise "http://$ip:7101" --data-center "dc-$i" \
      --node "node-$i" --insecure >"$WORK/storage-$i.log" 2>&1 &
    RB_PIDS+=($!)
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 1 100); do
      admin "$i" info >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

roam_cluster_down() {
  local pid i
  for pid in "${RB_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${RB_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  RB_PIDS=()
  for i in $(seq 0 $((RB_NODES - 1))); do
    ip netns del "rbench-$i" 2>/dev/null || true
    # Usually gone with the namespace (its veth peer was inside).
    ip link del "rbv$$h$i" 2>/dev/null || true
    rm -rf "$WORK/rdata-$i"
  done
  RB_NODES=0
  ip link del "$RB_BRIDGE" 2>/dev/null || true
}

admin() { local i=$1; shift; "$BIN/roam-csi" admin --endpoint "http://$RB_NET.$((10 + i)):7100" --insecure "$@"; }

# roam_volume N TRANSFER: volume "bench" on nodes 0..N-1, primary dc-0, and
# waits until every member is in sync (the first full copy is done).
roam_volume() {
  local n=$1 transfer=$2 i members=()
  for i in $(seq 0 $((n - 1))); do members+=(--member "dc-$i=http://$RB_NET.$((10 + i)):7101"); done
  for i in $(seq 0 $((n - 1))); do
    admin "$i" create --volume bench --size "$VOLUME_BYTES" >/dev/null || return 1
  done
  for i in $(seq 0 $((n - 1))); do
    admin "$i" configure --volume bench "${members[@]}" --primary dc-0 --epoch 1 \
      --transfer "$transfer" --policy block >/dev/null || return 1
  done
  for _ in $(seq 1 1200); do
    admin 0 status --volume bench --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["members"] and all(m["state"] == "InSync" for m in s["members"]) else 1)' && return 0
    sleep 0.25
  done
  log "members of bench never got in sync"; return 1
}

# roam_case CASE NODES TRANSFER RTT_MS
roam_case() {
  local case=$1 n=$2 transfer=$3 rtt=$4 mnt="$WORK/$1-$4-mnt" pid
  roam_cluster_up "$n" $((rtt * 500))
  if roam_volume "$n" "$transfer"; then
    stage_roam "$mnt" --endpoint "http://$RB_NET.10:7100" --epoch 1
    fio_case "$case" "$rtt" "$mnt"
    unstage_roam
  else
    skip "$case" "$rtt" "the group did not reach InSync"
  fi
  roam_cluster_down
}

# Relocation of a Sync volume under a 4K write load: TransferPrimary's wall
# time and the storage system's own measure (last_transfer_millis).
relocation_case() {
  local mnt="$WORK/reloc-mnt" pid fio_pid t0 t1
  roam_cluster_up 2 0
  roam_volume 2 sync
  stage_roam "$mnt" --endpoint "http://$RB_NET.10:7100" --epoch 1
  fio --name=load --directory="$mnt" --size=64M --rw=randwrite --bs=4k --ioengine=psync \
      --direct=1 --sync=dsync --runtime=30 --time_based >/dev/null 2>&1 &
  fio_pid=$!
  sleep 3
  t0=$(date +%s%N)
  admin 0 transfer --volume bench --target dc-1 >/dev/null
  t1=$(date +%s%N)
  kill "$fio_pid" 2>/dev/null; wait "$fio_pid" 2>/dev/null || true
  {
    echo "wall_ms=$(( (t1 - t0) / 1000000 ))"
    # The old primary handled TransferPrimary and recorded its duration.
    admin 0 status --volume bench --json | python3 -c 'import json,sys; print("engine_ms=%d" % json.load(sys.stdin)["last_transfer_millis"])'
  } >"$RAW/relocation.txt"
  log "relocation: $(tr '\n' ' ' <"$RAW/relocation.txt")"
  unstage_roam
  roam_cluster_down
}

roam_replicated_cases() {
  local rtt
  for rtt in 0 "$DELAY_RTT_MS"; do
    roam_case roam-sync-2dc 2 sync "$rtt"
    roam_case roam-async-2dc 2 async "$rtt"
    roam_case roam-sync-3dc 3 sync "$rtt"
  done
}

GLUSTER_STARTED=
gluster_down() {
  [ -n "$GLUSTER_STARTED" ] || return 0
  umount "$WORK/gluster-mnt" 2>/dev/null
  gluster --mode=script volume stop roambench force >/dev/null 2>&1
  gluster --mode=script volume delete roambench >/dev/null 2>&1
  pkill -F "$WORK/glusterd.pid" 2>/dev/null
  GLUSTER_STARTED=
}

case_gluster() {
  if ! command -v glusterd >/dev/null; then
    skip gluster-replica2 0 "glusterfs-server not installed"; return
  fi
  if pgrep -x glusterd >/dev/null; then
    skip gluster-replica2 0 "a glusterd is already running on this host"; return
  fi
  glusterd --pid-file="$WORK/glusterd.pid"
  GLUSTER_STARTED=1
  sleep 2
  mkdir -p "$WORK/brick1" "$WORK/brick2" "$WORK/gluster-mnt"
  local host; host=$(hostname)
  gluster --mode=script volume create roambench replica 2 \
    "$host:$WORK/brick1/b" "$host:$WORK/brick2/b" force >&2
  gluster --mode=script volume start roambench >&2
  mount -t glusterfs "$host:/roambench" "$WORK/gluster-mnt"
  fio_case gluster-replica2 0 "$WORK/gluster-mnt"
  gluster_down
  skip gluster-replica2 "$DELAY_RTT_MS" \
    "both bricks share one host; glusterd hands out brick ports itself, so no delay proxy sits between them"
}

machine_info() {
  {
    echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
    echo "cores=$(nproc)"
    echo "memory_gib=$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "fio=$(fio --version)"
    echo "runtime_s=$RUNTIME"
    echo "file_mb=$FILE_MB"
    echo "date=$(date -u +%FT%TZ)"
  } >"$RAW/machine.txt"
}

start=$(date +%s)
machine_info
for step in ${BENCH_ONLY:-case_local_limit case_roam_frontend case_roam_local roam_replicated_cases relocation_case case_gluster}; do
  "$step"
done
python3 bench/summarize.py "$RAW" bench/results/latest.json docs/benchmarks.md
log "done in $(( $(date +%s) - start )) s"

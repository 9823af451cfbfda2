#!/usr/bin/env bash
# Data-path benchmarks: fio on a mounted filesystem, every case side by side
# in one run, then bench/results/latest.json and the table in
# docs/benchmarks.md (bench/summarize.py).
#
# Jobs, in every case (BENCH_RUNTIME seconds each where timed):
#   wf  4K random write+O_DSYNC (O_DIRECT) at depth 1
#   rr  4K random read at depth 16
#   sw  1 MiB sequential write at depth 4, then fsync
#   ow  4K random overwrite of a fully written file, fdatasync after each
#       (what a database does to its preallocated WAL and data files)
#   wa  write amplification: FILE_MB of 1 MiB sequential writes and an fsync;
#       the bytes the disk under $WORK took meanwhile (its sectors-written
#       counter, after a sync) per byte written, divided by the replicas the
#       case keeps on this disk
#   pg  pgbench: PostgreSQL from Debian initialized on the mounted volume,
#       TPC-B-like, BENCH_PG_TRANSACTIONS per client (TPS, mean latency)
#
# Cases:
#   local-limit       ext4 on a loop device (direct I/O) over a plain file
#   roam-frontend     ext4 on Roam's FUSE -> loop stack over a plain file
#                     (the frontend's own ceiling, no journal, no replication)
#   roam-local        ext4 on Roam's stack over an in-process replica (the
#                     engine's journal and real volume; primary on this node)
#   roam-sync-2dc, roam-async-2dc, roam-sync-3dc
#                     ext4 on Roam's stack over the primary's replica in
#                     process (`roam-csi storage --stage-volume` on this
#                     host, as the node plugin does when the primary is on
#                     its node); each secondary is a `roam-csi storage`
#                     process in its own network namespace with a delay
#                     proxy in front of it
#   gluster-replica2  GlusterFS replica 2, both bricks on this host; the
#                     client (FUSE mount) in its own network namespace
#                     reaches brick 2 through a delay proxy (brick 1 plays
#                     the local disk)
#   roam-sync-flush-2dc
#                     roam-sync-2dc at syncLevel Flush (only flushes wait)
# Replicated cases run at 0 ms and again at BENCH_DELAY_RTT_MS added RTT.
# Then: relocation of a Sync volume under write load, and a resync after a
# partition (throughput, bytes moved against bytes written meanwhile).
#
# Selection (for profiling): BENCH_ONLY="step ..." runs only those steps;
# BENCH_JOBS (default "wf rr sw ow wa pg") picks jobs; BENCH_PROFILE=1 samples the
# CPU during each job into $RAW/<case>@<rtt>.<job>.profile.txt; BENCH_REPLICATED (default
# "roam-sync-2dc roam-sync-flush-2dc roam-async-2dc roam-sync-3dc") and BENCH_RTTS (default
# "0 BENCH_DELAY_RTT_MS") pick the replicated cases.
#
# Needs root, fio, losetup, mkfs.ext4, ip netns; PostgreSQL for the pg job,
# glusterfs-server and nft for the Gluster case (`make bench` installs them;
# nft only inside its client's namespace). A run without its peer is no comparison: when the
# Gluster case cannot run, the run still writes its results and then fails,
# saying why.
# BENCH_SKIP_BUILD=1 uses the release binaries already in target/release.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNTIME=${BENCH_RUNTIME:-15}
FILE_MB=${BENCH_FILE_MB:-256}
VOLUME_BYTES=${BENCH_VOLUME_BYTES:-$((512 << 20))}
DELAY_RTT_MS=${BENCH_DELAY_RTT_MS:-2}
JOBS=${BENCH_JOBS:-wf rr sw ow wa pg}
REPLICATED=${BENCH_REPLICATED:-roam-sync-2dc roam-sync-flush-2dc roam-async-2dc roam-sync-3dc}
PG_SCALE=${BENCH_PG_SCALE:-4}
PG_CLIENTS=${BENCH_PG_CLIENTS:-4}
PG_TRANSACTIONS=${BENCH_PG_TRANSACTIONS:-250}
RTTS=${BENCH_RTTS:-0 $DELAY_RTT_MS}
RAW=bench/results/raw
WORK=$(mktemp -d /tmp/rbench.XXXXXX)
# PostgreSQL runs as its own user and must reach its data directory below.
chmod 0755 "$WORK"
BIN=target/release
mkdir -p "$RAW"
# BENCH_ONLY="case_x case_y" runs only those steps and keeps earlier results.
[ -n "${BENCH_ONLY:-}" ] || rm -f "$RAW"/*.json "$RAW"/*.skip "$RAW"/*.txt

log() { echo "[bench $(date +%T)] $*" >&2; }

PIDS=()
# The primary storage system's /metrics while a replicated case runs.
RB_METRICS=
RB_METRICS_PORT=${BENCH_METRICS_PORT:-9481}
cleanup() {
  set +e
  pg_stop
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  grep -o "${WORK}[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; done
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

# run_fio OUT FIO-ARGS...: fio's JSON into OUT. With BENCH_PROFILE=1 the whole
# machine is sampled meanwhile (perf, cpu-clock: these machines have no
# hardware counters), and OUT's .profile.txt gets the CPU time per thread
# name and the hottest symbols: where the cycles of a case go, idle included.
run_fio() {
  local out=$1; shift
  if [ -z "${BENCH_PROFILE:-}" ]; then
    fio "$@" >"$out"
    return
  fi
  local data profile="${out%.json}.profile.txt"
  data="$WORK/$(basename "$out").perf.data"
  local before=""
  [ -n "$RB_METRICS" ] && before=$(curl -sf "$RB_METRICS" || true)
  perf record -q -a -e cpu-clock -F 499 -o "$data" -- fio "$@" >"$out"
  {
    if [ -n "$before" ]; then
      echo "# requests reaching the primary's replica per fio I/O (its /metrics, before and after)"
      python3 - "$out" <(echo "$before") <(curl -sf "$RB_METRICS" || true) <<'PY'
import json, sys
def totals(path):
    t = {}
    for line in open(path):
        if line.startswith("roam_storage_") and not line.startswith("#"):
            name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
            t[name] = t.get(name, 0.0) + value
    return t
job = json.load(open(sys.argv[1]))["jobs"][0]
ios = job["write"]["total_ios"] + job["read"]["total_ios"]
a, b = totals(sys.argv[2]), totals(sys.argv[3])
d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
writes, flushes = d.get("roam_storage_writes_total", 0), d.get("roam_storage_flushes_total", 0)
reads = d.get("roam_storage_reads_total", 0)
print(f"fio I/Os {ios}; replica reads {reads:.0f} ({reads / max(ios, 1):.2f} per I/O), "
      f"writes {writes:.0f} ({writes / max(ios, 1):.2f} per I/O), "
      f"flushes {flushes:.0f} ({flushes / max(ios, 1):.2f} per I/O), "
      f"mean flush {1e6 * d.get('roam_storage_flush_duration_seconds_sum', 0) / max(flushes, 1):.0f} us")
PY
      echo
    fi
    echo "# CPU samples by thread name (both cores; swapper = idle)"
    perf report -i "$data" --stdio --quiet --sort comm --percent-limit 1 2>/dev/null
    echo
    echo "# hottest symbols (thread name, object, symbol)"
    perf report -i "$data" --stdio --quiet --sort comm,dso,sym --percent-limit 0.7 2>/dev/null | head -60
  } >"$profile"
  rm -f "$data"
}

# fio_case CASE RTT_MS MOUNT REPLICAS: the jobs, results into
# $RAW/CASE@RTT.<job>.{json,txt}. REPLICAS: copies the case keeps on this
# host's disk (for the write amplification).
fio_case() {
  local case=$1 rtt=$2 mnt=$3 replicas=$4 base="$RAW/$1@$2"
  local common=(--directory="$mnt" --size="${FILE_MB}M" --runtime="$RUNTIME" --time_based
                --ramp_time=2 --output-format=json --group_reporting)
  if [[ " $JOBS " == *" wf "* ]]; then
    log "$case @ ${rtt} ms: 4k write+dsync"
    run_fio "$base.wf.json" --name=wf --rw=randwrite --bs=4k --ioengine=psync --direct=1 \
        --sync=dsync --iodepth=1 "${common[@]}"
    rm -f "$mnt"/wf.*
  fi
  if [[ " $JOBS " == *" rr "* ]]; then
    log "$case @ ${rtt} ms: 4k random read"
    run_fio "$base.rr.json" --name=rr --rw=randread --bs=4k --ioengine=libaio --direct=1 \
        --iodepth=16 "${common[@]}"
    rm -f "$mnt"/rr.*
  fi
  if [[ " $JOBS " == *" sw "* ]]; then
    log "$case @ ${rtt} ms: 1M sequential write"
    run_fio "$base.sw.json" --name=sw --rw=write --bs=1m --ioengine=libaio --direct=1 \
        --iodepth=4 --end_fsync=1 "${common[@]}"
    rm -f "$mnt"/sw.*
  fi
  if [[ " $JOBS " == *" ow "* ]]; then
    log "$case @ ${rtt} ms: 4k overwrite+fdatasync"
    # overwrite=1: fio writes the whole file before the timed phase.
    run_fio "$base.ow.json" --name=ow --rw=randwrite --bs=4k --ioengine=psync --overwrite=1 \
        --fdatasync=1 --iodepth=1 "${common[@]}"
    rm -f "$mnt"/ow.*
  fi
  if [[ " $JOBS " == *" wa "* ]]; then
    log "$case @ ${rtt} ms: write amplification"
    write_amplification "$base" "$mnt" "$replicas"
  fi
  if [[ " $JOBS " == *" pg "* ]]; then
    log "$case @ ${rtt} ms: pgbench"
    pgbench_job "$base" "$mnt"
  fi
  rm -f "$mnt"/wf.* "$mnt"/rr.* "$mnt"/sw.* "$mnt"/ow.* "$mnt"/wa.*
}

# The sectors-written counter of the disk that holds $WORK (every replica,
# brick and journal of every case lives there).
DISK_STAT=/sys/class/block/$(basename "$(findmnt -no SOURCE --target "$WORK" | sed 's/\[.*//')")/stat
disk_written_bytes() { awk '{ printf "%.0f\n", $7 * 512 }' "$DISK_STAT"; }

# Hook: waits until what the case wrote has reached every replica's process
# (roam_case sets it to wait for an Async secondary to catch up).
WAIT_REPLICATED=true

# write_amplification BASE MOUNT REPLICAS: BASE.wa.json (fio) and BASE.wa.txt
# (disk_bytes, user_bytes, replicas). A sync after the job puts what the
# replicas' processes left in the page cache on the disk, so it is counted.
write_amplification() {
  local base=$1 mnt=$2 replicas=$3 before after
  if [ ! -r "$DISK_STAT" ]; then
    echo "error=no block device statistics at $DISK_STAT" >"$base.wa.txt"; return
  fi
  sync
  before=$(disk_written_bytes)
  fio --name=wa --directory="$mnt" --size="${FILE_MB}M" --rw=write --bs=1m --ioengine=libaio \
      --direct=1 --iodepth=4 --end_fsync=1 --output-format=json >"$base.wa.json"
  "$WAIT_REPLICATED"
  sync
  after=$(disk_written_bytes)
  {
    echo "disk_bytes=$((after - before))"
    python3 -c 'import json, sys; print("user_bytes=%d" % json.load(open(sys.argv[1]))["jobs"][0]["write"]["io_bytes"])' "$base.wa.json"
    echo "replicas=$replicas"
  } >"$base.wa.txt"
  rm -f "$mnt"/wa.*
}

# PostgreSQL (Debian's newest installed major version), run as postgres.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
PG_DATA=
as_postgres() { local prog=$1; shift; (cd / && runuser -u postgres -- "$PG_BIN/$prog" "$@"); }
pg_stop() {
  [ -n "$PG_DATA" ] || return 0
  as_postgres pg_ctl -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null 2>&1 ||
    as_postgres pg_ctl -D "$PG_DATA" -m immediate stop >/dev/null 2>&1 || true
  PG_DATA=
}

# pgbench_job BASE MOUNT: a cluster initialized in MOUNT/pg, pgbench's
# TPC-B-like script, PG_TRANSACTIONS per client; its output in BASE.pg.txt,
# or the step that failed (error=...).
pgbench_job() {
  local base=$1 mnt=$2 sock="$WORK/pg-socket"
  if [ -z "$PG_BIN" ] || ! id postgres >/dev/null 2>&1; then
    echo "error=PostgreSQL is not installed (make bench installs it)" >"$base.pg.txt"; return
  fi
  PG_DATA="$mnt/pg"
  mkdir -p "$PG_DATA" "$sock" && chown postgres: "$PG_DATA" "$sock"
  if ! as_postgres initdb -D "$PG_DATA" -A trust --no-instructions >"$WORK/pg-init.log" 2>&1; then
    echo "error=initdb failed: $(tail -n 1 "$WORK/pg-init.log")" >"$base.pg.txt"; pg_stop; return
  fi
  if ! as_postgres pg_ctl -D "$PG_DATA" -l "$sock/server.log" -w -t 120 \
      -o "-k $sock -c listen_addresses='' -c shared_buffers=128MB" start >/dev/null; then
    echo "error=the server did not start: $(tail -n 1 "$sock/server.log")" >"$base.pg.txt"; pg_stop; return
  fi
  if ! as_postgres pgbench -h "$sock" -i -s "$PG_SCALE" -q postgres >"$WORK/pg-bench-init.log" 2>&1; then
    echo "error=pgbench -i failed: $(tail -n 1 "$WORK/pg-bench-init.log")" >"$base.pg.txt"; pg_stop; return
  fi
  as_postgres pgbench -h "$sock" -c "$PG_CLIENTS" -j 2 -t "$PG_TRANSACTIONS" postgres >"$base.pg.txt" 2>&1 ||
    echo "error=pgbench failed" >>"$base.pg.txt"
  pg_stop
  rm -rf "${mnt:?}/pg"
}

skip() { echo "$3" >"$RAW/$1@$2.skip"; log "skip $1 @ $2 ms: $3"; }

case_local_limit() {
  local img="$WORK/local.img" mnt="$WORK/local-mnt" dev
  truncate -s "$VOLUME_BYTES" "$img"
  dev=$(losetup --find --show --direct-io=on "$img")
  mkfs.ext4 -q -E nodiscard "$dev"
  mkdir -p "$mnt" && mount -o noatime "$dev" "$mnt"
  fio_case local-limit 0 "$mnt" 1
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
  fio_case roam-frontend 0 "$mnt" 1
  unstage_roam
}

case_roam_local() {
  local mnt="$WORK/roam-local-mnt" pid
  stage_roam "$mnt" --local-dir "$WORK/roam-local" --size "$VOLUME_BYTES"
  fio_case roam-local 0 "$mnt" 1
  unstage_roam
}

# A private network for the storage systems: bridge $RB_BRIDGE at
# $RB_NET.1. Node 0 (the primary, dc-0) is a storage system on this host at
# $RB_NET.1:7190 that stages volume "bench" in process at $RB_STAGE_MOUNT;
# node i >= 1 runs in namespace rbench-<i> at $RB_NET.(10+i) on :7100. Each
# has a delay proxy (port + 1) that its peers use, with byte counters in
# $WORK/proxy-<i>.stats.
RB_BRIDGE=roambr$$
RB_BRIDGE=${RB_BRIDGE:0:15}
RB_NET=10.231.77
RB_NODES=0
RB_PIDS=()
RB_PROXY_PIDS=()
RB_PRIMARY_PID=
RB_STAGE_MOUNT=
RB_DELAY_US=0

node_ip() { if [ "$1" = 0 ]; then echo "$RB_NET.1"; else echo "$RB_NET.$((10 + $1))"; fi; }
node_port() { if [ "$1" = 0 ]; then echo 7190; else echo 7100; fi; }
node_api() { echo "http://$(node_ip "$1"):$(node_port "$1")"; }
node_peer() { echo "http://$(node_ip "$1"):$(( $(node_port "$1") + 1 ))"; }
# Command prefix that runs a program in node I's namespace. Used as
# "${NODE_NS[@]}" prog ... &, never through a function, so that $! is the
# program's own pid (ip netns exec execs it) and kill reaches it.
node_ns() { NODE_NS=(); [ "$1" = 0 ] || NODE_NS=(ip netns exec "rbench-$1"); }

# start_proxy I: (re)starts node I's delay proxy; its pid in RB_PROXY_PIDS[I].
start_proxy() {
  local i=$1 ip port
  ip=$(node_ip "$i") port=$(node_port "$i")
  node_ns "$i"
  "${NODE_NS[@]}" "$BIN/roam-delay-proxy" --listen "$ip:$((port + 1))" \
    --upstream "$ip:$port" --delay-us "$RB_DELAY_US" \
    --stats-file "$WORK/proxy-$i.stats" 2>/dev/null &
  RB_PROXY_PIDS[i]=$!
  PIDS+=($!)
}

roam_cluster_up() {
  local n=$1 i ns ip
  RB_DELAY_US=$2
  ip link add "$RB_BRIDGE" type bridge
  ip addr add "$RB_NET.1/24" dev "$RB_BRIDGE"
  ip link set "$RB_BRIDGE" up
  RB_NODES=$n
  for i in $(seq 1 $((n - 1))); do
    ns=rbench-$i ip=$(node_ip "$i")
    ip netns add "$ns"
    ip link add "rbv$$h$i" type veth peer name "rbv$$n$i"
    ip link set "rbv$$h$i" master "$RB_BRIDGE" up
    ip link set "rbv$$n$i" netns "$ns"
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr add "$ip/24" dev "rbv$$n$i"
    ip netns exec "$ns" ip link set "rbv$$n$i" up
  done
  for i in $(seq 0 $((n - 1))); do
    mkdir -p "$WORK/rdata-$i"
    start_proxy "$i"
    local stage=()
    if [ "$i" = 0 ]; then
      stage=(--stage-volume bench --stage-mount "$RB_STAGE_MOUNT" --metrics-listen "127.0.0.1:$RB_METRICS_PORT")
      RB_METRICS="http://127.0.0.1:$RB_METRICS_PORT/metrics"
    fi
    node_ns "$i"
    "${NODE_NS[@]}" "$BIN/roam-csi" storage --data-dir "$WORK/rdata-$i" \
      --listen "$(node_ip "$i"):$(node_port "$i")" --advertise "$(node_peer "$i")" \
      --data-center "dc-$i" --node "node-$i" --ack-timeout-ms "${RB_ACK_TIMEOUT_MS:-10000}" \
      --insecure "${stage[@]}" >"$WORK/storage-$i.log" 2>&1 &
    if [ "$i" = 0 ]; then RB_PRIMARY_PID=$!; PIDS+=($!); else RB_PIDS+=($!); fi
  done
  for i in $(seq 0 $((n - 1))); do
    for _ in $(seq 1 100); do
      admin "$i" info >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
}

# Waits for the in-process stage of the primary ("ready" in its output).
wait_staged() {
  for _ in $(seq 1 600); do
    grep -q '^ready' "$WORK/storage-0.log" && return 0
    kill -0 "$RB_PRIMARY_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/storage-0.log" >&2; return 1
}

roam_cluster_down() {
  local pid i
  RB_METRICS=
  # The primary first, with SIGTERM: it unmounts what it staged. If it has
  # not finished within 20 s (it should not happen: a storage system drains
  # open calls for 5 s at most), detach the stack lazily and kill it.
  if [ -n "$RB_PRIMARY_PID" ]; then
    kill -TERM "$RB_PRIMARY_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do kill -0 "$RB_PRIMARY_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$RB_PRIMARY_PID" 2>/dev/null; then
      log "the primary did not stop within 20 s; detaching its stack lazily"
      tail -n 5 "$WORK/storage-0.log" >&2 || true
      umount -l "$RB_STAGE_MOUNT" 2>/dev/null || true
      for dev in $(losetup -j "$RB_STAGE_MOUNT.fuse/volume" -O NAME -n 2>/dev/null); do losetup -d "$dev" 2>/dev/null || true; done
      umount -l "$RB_STAGE_MOUNT.fuse" 2>/dev/null || true
      kill -9 "$RB_PRIMARY_PID" 2>/dev/null || true
    fi
    wait "$RB_PRIMARY_PID" 2>/dev/null || true
    RB_PRIMARY_PID=
  fi
  for pid in "${RB_PIDS[@]}" "${RB_PROXY_PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${RB_PIDS[@]}" "${RB_PROXY_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  RB_PIDS=()
  RB_PROXY_PIDS=()
  for i in $(seq 0 $((RB_NODES - 1))); do
    if [ "$i" != 0 ]; then
      ip netns del "rbench-$i" 2>/dev/null || true
      # Usually gone with the namespace (its veth peer was inside).
      ip link del "rbv$$h$i" 2>/dev/null || true
    fi
    rm -rf "$WORK/rdata-$i" "$WORK/proxy-$i.stats"
  done
  RB_NODES=0
  ip link del "$RB_BRIDGE" 2>/dev/null || true
}

admin() { local i=$1; shift; "$BIN/roam-csi" admin --endpoint "$(node_api "$i")" --insecure "$@"; }

# all_in_sync: exit status 0 when every member of "bench" is InSync.
all_in_sync() {
  admin 0 status --volume bench --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if s["members"] and all(m["state"] == "InSync" for m in s["members"]) else 1)'
}

# all_caught_up: exit status 0 when every member holds what the primary wrote.
all_caught_up() {
  admin 0 status --volume bench --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if all(m["applied_seq"] >= s["written_seq"] for m in s["members"]) else 1)'
}

# Bounded: an Async secondary catches up within seconds when nothing writes.
wait_caught_up() {
  for _ in $(seq 1 600); do all_caught_up && return 0; sleep 0.1; done
  log "the secondaries did not catch up within 60 s"
}

# roam_volume N TRANSFER [POLICY [LEVEL]]: volume "bench" on nodes 0..N-1,
# primary dc-0, and waits until every member is in sync (the first full copy
# is done).
roam_volume() {
  local n=$1 transfer=$2 policy=${3:-block} level=${4:-write} i members=()
  for i in $(seq 0 $((n - 1))); do members+=(--member "dc-$i=$(node_peer "$i")"); done
  for i in $(seq 0 $((n - 1))); do
    admin "$i" create --volume bench --size "$VOLUME_BYTES" >/dev/null || return 1
  done
  for i in $(seq 0 $((n - 1))); do
    admin "$i" configure --volume bench "${members[@]}" --primary dc-0 --epoch 1 \
      --transfer "$transfer" --sync-level "$level" --policy "$policy" >/dev/null || return 1
  done
  for _ in $(seq 1 1200); do
    all_in_sync && return 0
    sleep 0.25
  done
  log "members of bench never got in sync"; return 1
}

# roam_case CASE NODES TRANSFER RTT_MS [LEVEL]
roam_case() {
  local case=$1 n=$2 transfer=$3 rtt=$4 level=${5:-write}
  RB_STAGE_MOUNT="$WORK/$1-$4-mnt"
  roam_cluster_up "$n" $((rtt * 500))
  if roam_volume "$n" "$transfer" block "$level" && wait_staged; then
    WAIT_REPLICATED=wait_caught_up
    fio_case "$case" "$rtt" "$RB_STAGE_MOUNT" "$n"
    WAIT_REPLICATED=true
  else
    skip "$case" "$rtt" "the group did not reach InSync or the volume was not staged"
  fi
  roam_cluster_down
}

# Relocation of a Sync volume under a 4K write load: TransferPrimary's wall
# time and the storage system's own measure (last_transfer_millis, kept by
# the old primary).
relocation_case() {
  local fio_pid t0 t1
  RB_STAGE_MOUNT="$WORK/reloc-mnt"
  roam_cluster_up 2 0
  if ! { roam_volume 2 sync && wait_staged; }; then
    skip relocation-sync-2dc 0 "setup failed"; roam_cluster_down; return
  fi
  fio --name=load --directory="$RB_STAGE_MOUNT" --size=64M --rw=randwrite --bs=4k --ioengine=psync \
      --direct=1 --sync=dsync --runtime=30 --time_based >/dev/null 2>&1 &
  fio_pid=$!
  sleep 3
  t0=$(date +%s%N)
  admin 0 transfer --volume bench --target dc-1 >/dev/null
  t1=$(date +%s%N)
  kill "$fio_pid" 2>/dev/null; wait "$fio_pid" 2>/dev/null || true
  {
    echo "wall_ms=$(( (t1 - t0) / 1000000 ))"
    admin 0 status --volume bench --json | python3 -c 'import json,sys; print("engine_ms=%d" % json.load(sys.stdin)["last_transfer_millis"])'
  } >"$RAW/relocation.txt" || log "relocation: reading the storage system's measure failed"
  log "relocation: $(tr '\n' ' ' <"$RAW/relocation.txt")"
  roam_cluster_down
}

# Resync after a partition: a Sync 2-DC volume under Degrade loses its
# secondary's proxy (killed: the link breaks at once), takes
# RESYNC_WRITE_MB of 1 MiB random writes (plus a file laid out before),
# then the proxy comes back. Records the bytes written meanwhile, the bytes
# the proxy carried to the secondary until it was InSync again, and the
# time from the heal to InSync (reconnection included).
RESYNC_WRITE_MB=${BENCH_RESYNC_WRITE_MB:-128}
resync_case() {
  RB_STAGE_MOUNT="$WORK/resync-mnt"
  RB_ACK_TIMEOUT_MS=1000 roam_cluster_up 2 0
  if ! { roam_volume 2 sync degrade && wait_staged; }; then
    skip resync-sync-2dc 0 "setup failed"; roam_cluster_down; return
  fi
  # Lay out the file while both are in sync, so only the random writes dirty.
  fio --name=lay --directory="$RB_STAGE_MOUNT" --filename=resync.dat --size=256M --rw=write \
      --bs=1m --ioengine=psync --end_fsync=1 >/dev/null 2>&1
  kill -9 "${RB_PROXY_PIDS[1]}"; wait "${RB_PROXY_PIDS[1]}" 2>/dev/null || true
  fio --name=dirty --directory="$RB_STAGE_MOUNT" --filename=resync.dat --size=256M \
      --rw=randwrite --bs=1m --io_size="${RESYNC_WRITE_MB}M" --ioengine=psync --direct=1 \
      --end_fsync=1 --output-format=json >"$WORK/resync-fio.json" 2>/dev/null
  rm -f "$WORK/proxy-1.stats"
  local healed
  healed=$(date +%s.%N)
  start_proxy 1
  python3 - "$WORK/proxy-1.stats" "$WORK/resync-fio.json" "$(node_api 0)" "$BIN/roam-csi" "$healed" \
      >"$RAW/resync.txt" <<'PY' || log "resync: measuring failed"
import json, subprocess, sys, time
stats, fio_json, api, cli, healed = sys.argv[1:6]
def moved():
    try:
        with open(stats) as f:
            return int(dict(l.strip().split("=") for l in f if "=" in l)["to_upstream"])
    except (OSError, KeyError, ValueError):
        return 0
def status():
    out = subprocess.run([cli, "admin", "--endpoint", api, "--insecure", "status",
                          "--volume", "bench", "--json"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None
# Polled as fast as the admin CLI answers (a few ms a call): the time from
# the heal to InSync is an upper bound on the resync's own time.
start = float(healed)
while time.time() - start < 300:
    s = status()
    if s and s["members"] and all(m["state"] == "InSync" for m in s["members"]):
        break
done = time.time()
time.sleep(0.3)  # the proxy writes its counters every 100 ms
written = json.load(open(fio_json))["jobs"][0]["write"]["io_bytes"]
print(f"written_bytes={written}")
print(f"moved_bytes={moved()}")
print(f"heal_to_insync_ms={int((done - start) * 1000)}")
PY
  log "resync: $(tr '\n' ' ' <"$RAW/resync.txt")"
  roam_cluster_down
}

roam_replicated_cases() {
  local rtt case
  for rtt in $RTTS; do
    for case in $REPLICATED; do
      case $case in
        roam-sync-2dc) roam_case roam-sync-2dc 2 sync "$rtt" ;;
        roam-sync-flush-2dc) roam_case roam-sync-flush-2dc 2 sync "$rtt" flush ;;
        roam-async-2dc) roam_case roam-async-2dc 2 async "$rtt" ;;
        roam-sync-3dc) roam_case roam-sync-3dc 3 sync "$rtt" ;;
      esac
    done
  done
}

# GlusterFS replica 2. Gluster replicates in the client: the FUSE client's
# AFR translator writes to each brick at the address and port glusterd's
# port map gives. So the client (the glusterfs process behind the mount)
# runs in network namespace $GL_NS, joined to this host by a veth pair;
# glusterd and both bricks run on this host at $GL_NET.1. Brick 1 is
# reached directly: it plays the primary's local disk. In the client's
# namespace a DNAT rule sends every connection to brick 2's port to a delay
# proxy on this host (byte counters in $WORK/gluster-proxy.stats) in front
# of brick 2, with the per-direction delay the Roam secondaries' proxies
# get; at 0 ms the proxy stays in the path with no delay, as for Roam. Only
# the network namespace differs (nsenter --net), so the mount lands in this
# host's mount namespace, where fio runs.
GL_NS=rgbench$$
GL_VETH_HOST=rgv$$h
GL_VETH_NS=rgv$$n
GL_NET=10.99.0
GL_PROXY_PORT=7390
GL_MNT=
GL_PROXY_PID=
GLUSTER_STARTED=

# The glusterfs client processes left in the client's namespace (pids).
gluster_ns_pids() { ip netns pids "$GL_NS" 2>/dev/null || true; }

# Unmounts the volume and waits for its client process to exit (killed by
# pid after 10 s), so the next mount or the namespace's removal starts clean.
gluster_unmount() {
  local pid
  if grep -q " $GL_MNT fuse" /proc/mounts; then
    umount "$GL_MNT" 2>/dev/null || umount -l "$GL_MNT" 2>/dev/null || true
  fi
  for _ in $(seq 1 100); do [ -z "$(gluster_ns_pids)" ] && return 0; sleep 0.1; done
  for pid in $(gluster_ns_pids); do kill -9 "$pid" 2>/dev/null || true; done
}

gluster_proxy_stop() {
  [ -n "$GL_PROXY_PID" ] || return 0
  kill -TERM "$GL_PROXY_PID" 2>/dev/null || true
  wait "$GL_PROXY_PID" 2>/dev/null || true
  GL_PROXY_PID=
}

# gluster_proxy_start DELAY_US UPSTREAM_PORT: the proxy in front of brick 2,
# listening on $GL_NET.1:$GL_PROXY_PORT once this returns.
gluster_proxy_start() {
  rm -f "$WORK/gluster-proxy.stats"
  "$BIN/roam-delay-proxy" --listen "$GL_NET.1:$GL_PROXY_PORT" --upstream "$GL_NET.1:$2" \
    --delay-us "$1" --stats-file "$WORK/gluster-proxy.stats" 2>/dev/null &
  GL_PROXY_PID=$!
  PIDS+=($!)
  for _ in $(seq 1 50); do
    [ -n "$(ss -Hltn "src $GL_NET.1 and sport = :$GL_PROXY_PORT")" ] && return 0
    sleep 0.1
  done
  log "gluster: the delay proxy did not listen on $GL_NET.1:$GL_PROXY_PORT"; return 1
}

# Bytes the proxy has carried toward brick 2 (0 before its first count).
gluster_proxy_bytes() {
  sed -n 's/^to_upstream=//p' "$WORK/gluster-proxy.stats" 2>/dev/null | grep . || echo 0
}

# brick_port PATH: the TCP port glusterd's port map gives the brick at PATH.
brick_port() {
  gluster --mode=script volume status roambench --xml | python3 -c '
import sys, xml.etree.ElementTree as et
for node in et.parse(sys.stdin).iter("node"):
    if node.findtext("path") == sys.argv[1] and (node.findtext("port") or "").isdigit():
        print(node.findtext("port")); sys.exit(0)
sys.exit(1)' "$1"
}

gluster_down() {
  [ -n "$GLUSTER_STARTED" ] || return 0
  [ -z "$GL_MNT" ] || gluster_unmount
  gluster_proxy_stop
  if [ -f "$WORK/glusterd.pid" ]; then
    gluster --mode=script volume stop roambench force >/dev/null 2>&1 || true
    gluster --mode=script volume delete roambench >/dev/null 2>&1 || true
    pkill -F "$WORK/glusterd.pid" 2>/dev/null || true
    for _ in $(seq 1 100); do pgrep -F "$WORK/glusterd.pid" >/dev/null 2>&1 || break; sleep 0.1; done
  fi
  # The nat table in the client's namespace goes with the namespace.
  ip netns del "$GL_NS" 2>/dev/null || true
  ip link del "$GL_VETH_HOST" 2>/dev/null || true
  GLUSTER_STARTED=
}

# gluster_up: glusterd, the client's namespace and the started volume, with
# brick 2's port in GL_BRICK2_PORT. Returns 1 at the first step that fails
# (gluster_down removes what was made).
GL_BRICK2_PORT=
gluster_up() {
  ip netns add "$GL_NS" &&
    ip link add "$GL_VETH_HOST" type veth peer name "$GL_VETH_NS" &&
    ip addr add "$GL_NET.1/24" dev "$GL_VETH_HOST" &&
    ip link set "$GL_VETH_HOST" up &&
    ip link set "$GL_VETH_NS" netns "$GL_NS" &&
    ip netns exec "$GL_NS" ip link set lo up &&
    ip netns exec "$GL_NS" ip addr add "$GL_NET.2/24" dev "$GL_VETH_NS" &&
    ip netns exec "$GL_NS" ip link set "$GL_VETH_NS" up &&
    glusterd --pid-file="$WORK/glusterd.pid" || return 1
  for _ in $(seq 1 100); do
    gluster --mode=script volume list >/dev/null 2>&1 && break
    sleep 0.1
  done
  mkdir -p "$WORK/brick1" "$WORK/brick2" "$GL_MNT" &&
    gluster --mode=script volume create roambench replica 2 \
      "$GL_NET.1:$WORK/brick1/b" "$GL_NET.1:$WORK/brick2/b" force >&2 &&
    gluster --mode=script volume start roambench >&2 || return 1
  GL_BRICK2_PORT=
  for _ in $(seq 1 100); do
    GL_BRICK2_PORT=$(brick_port "$WORK/brick2/b" 2>/dev/null) && break
    sleep 0.1
  done
  [ -n "$GL_BRICK2_PORT" ] || { log "gluster: no port for brick 2 in the volume status"; return 1; }
  ip netns exec "$GL_NS" nft -f - <<NFT
table ip roam_gluster_bench {
  chain output {
    type nat hook output priority -100; policy accept;
    ip daddr $GL_NET.1 tcp dport $GL_BRICK2_PORT dnat to $GL_NET.1:$GL_PROXY_PORT
  }
}
NFT
}

# gluster_rtt RTT_MS BRICK2_PORT: mounts through a proxy with this RTT's
# delay, runs the jobs, checks the proxy carried the writes, unmounts.
gluster_rtt() {
  local rtt=$1 port=$2 before after written
  rm -f "$RAW/gluster-replica2@$rtt.skip"  # from an earlier run (BENCH_ONLY keeps those)
  gluster_proxy_start $((rtt * 500)) "$port" || { skip gluster-replica2 "$rtt" "the delay proxy did not start"; return; }
  # The client connects to the bricks at mount time: after the DNAT rule and the proxy.
  if ! nsenter --net="/run/netns/$GL_NS" mount -t glusterfs "$GL_NET.1:/roambench" "$GL_MNT"; then
    skip gluster-replica2 "$rtt" "mounting the volume from the client's namespace failed"
    gluster_proxy_stop; return
  fi
  # Both bricks connected: the client's handshake with brick 2 crossed the proxy.
  for _ in $(seq 1 100); do [ "$(gluster_proxy_bytes)" -gt 0 ] && break; sleep 0.1; done
  before=$(gluster_proxy_bytes)
  fio_case gluster-replica2 "$rtt" "$GL_MNT" 2
  sleep 0.3  # the proxy writes its counters every 100 ms
  after=$(gluster_proxy_bytes)
  log "gluster-replica2 @ ${rtt} ms: the proxy carried $((after - before)) bytes to brick 2 during the jobs"
  gluster_unmount
  gluster_proxy_stop
  # AFR writes every byte to both bricks, so the proxy must have carried at
  # least what fio wrote; less means the client bypassed it, and the figures
  # would mislead.
  written=$(gluster_written_bytes "$rtt")
  if [ $((after - before)) -lt "$written" ]; then
    rm -f "$RAW/gluster-replica2@$rtt".*.json
    skip gluster-replica2 "$rtt" "the delay proxy carried $((after - before)) bytes to brick 2, fio wrote $written"
  fi
}

# gluster_written_bytes RTT_MS: bytes fio wrote in this run's write jobs
# (ramp time excluded, so a lower bound of what crossed to each brick).
gluster_written_bytes() {
  local job files=()
  for job in wf sw ow wa; do
    [[ " $JOBS " == *" $job "* ]] && files+=("$RAW/gluster-replica2@$1.$job.json")
  done
  python3 -c '
import json, sys
print(sum(json.load(open(p))["jobs"][0]["write"]["io_bytes"] for p in sys.argv[1:]))' "${files[@]}"
}

# Why the peer did not run, if it did not (the run fails at the end).
PEER_MISSING=
case_gluster() {
  local rtt
  if ! command -v glusterd >/dev/null; then
    PEER_MISSING="glusterfs-server is not installed (make bench installs it: e2e/tools/install.sh bench-apt)"
    for rtt in $RTTS; do skip gluster-replica2 "$rtt" "glusterfs-server not installed"; done
    return
  fi
  if pgrep -x glusterd >/dev/null; then
    PEER_MISSING="a glusterd is already running on this host (pid $(pgrep -x glusterd | head -1)); stop it and run again"
    for rtt in $RTTS; do skip gluster-replica2 "$rtt" "a glusterd is already running on this host"; done
    return
  fi
  GLUSTER_STARTED=1
  GL_MNT="$WORK/gluster-mnt"
  if ! gluster_up; then
    PEER_MISSING="setting up glusterd, the volume or the client's namespace failed (log above)"
    for rtt in $RTTS; do skip gluster-replica2 "$rtt" "setting up glusterd, the volume or the client's namespace failed"; done
    gluster_down; return
  fi
  for rtt in $RTTS; do gluster_rtt "$rtt" "$GL_BRICK2_PORT"; done
  gluster_down
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
    echo "build=release"
    echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$RAW/machine.txt"
}

start=$(date +%s)
machine_info
for step in ${BENCH_ONLY:-case_local_limit case_roam_frontend case_roam_local roam_replicated_cases relocation_case resync_case case_gluster}; do
  "$step"
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/machine.txt"
python3 bench/summarize.py "$RAW" bench/results/latest.json docs/benchmarks.md
log "done in $(( $(date +%s) - start )) s"
for f in "$RAW"/gluster-replica2@*.skip; do
  if [ -e "$f" ] && [[ " ${BENCH_ONLY:-case_gluster} " == *" case_gluster "* ]]; then
    PEER_MISSING=${PEER_MISSING:-"gluster-replica2 @ $(basename "$f" .skip | cut -d@ -f2) ms: $(cat "$f")"}
  fi
done
if [ -n "$PEER_MISSING" ]; then
  echo "bench: the peer GlusterFS did not run: $PEER_MISSING" >&2
  exit 1
fi

#!/usr/bin/env python3
"""Turn the raw fio JSON of bench/run.sh into bench/results/latest.json and
the table in docs/benchmarks.md.

usage: summarize.py RAW_DIR LATEST_JSON BENCHMARKS_MD
"""
import json
import os
import re
import sys

ORDER = ["local-limit", "roam-frontend", "roam-local", "roam-sync-2dc",
         "roam-sync-flush-2dc", "roam-async-2dc", "roam-sync-3dc", "gluster-replica2"]

# Every figure of a case record, None until measured.
FIGURES = ["write_fsync_4k_iops", "write_fsync_4k_p50_us", "write_fsync_4k_p99_us",
           "randread_4k_iops", "seqwrite_1m_mbps", "overwrite_4k_iops", "overwrite_4k_p50_us",
           "write_amplification", "pgbench_tps", "pgbench_latency_ms"]


def job(path, kind):
    with open(path) as f:
        data = json.load(f)
    return data["jobs"][0][kind]


def pct(clat, p):
    return round(clat["percentile"][p] / 1000.0, 1)


def record(raw, case, rtt):
    base = os.path.join(raw, f"{case}@{rtt}")
    rec = {"case": case, "rtt_ms": float(rtt), **dict.fromkeys(FIGURES)}
    if os.path.exists(base + ".skip"):
        with open(base + ".skip") as f:
            rec["skipped"] = f.read().strip()
        return rec
    # A job left out (BENCH_JOBS) stays None.
    if os.path.exists(base + ".wf.json"):
        wf = job(base + ".wf.json", "write")
        rec["write_fsync_4k_iops"] = round(wf["iops"], 1)
        rec["write_fsync_4k_p50_us"] = pct(wf["clat_ns"], "50.000000")
        rec["write_fsync_4k_p99_us"] = pct(wf["clat_ns"], "99.000000")
    if os.path.exists(base + ".rr.json"):
        rec["randread_4k_iops"] = round(job(base + ".rr.json", "read")["iops"], 1)
    if os.path.exists(base + ".sw.json"):
        # fio reports bw in KiB/s.
        rec["seqwrite_1m_mbps"] = round(job(base + ".sw.json", "write")["bw"] * 1024 / 1e6, 1)
    if os.path.exists(base + ".ow.json"):
        with open(base + ".ow.json") as f:
            ow = json.load(f)["jobs"][0]
        rec["overwrite_4k_iops"] = round(ow["write"]["iops"], 1)
        # One operation is a buffered write and its fdatasync: the sum of
        # their medians (the write is a page-cache copy, microseconds).
        rec["overwrite_4k_p50_us"] = round(
            pct(ow["write"]["clat_ns"], "50.000000") + pct(ow["sync"]["lat_ns"], "50.000000"), 1)
    wa = key_values(raw, f"{case}@{rtt}.wa.txt", "")
    if wa and wa.get("user_bytes") and wa.get("replicas"):
        rec["write_amplification"] = round(wa["disk_bytes"] / wa["user_bytes"] / wa["replicas"], 2)
    elif os.path.exists(base + ".wa.txt"):
        rec["write_amplification_error"] = open(base + ".wa.txt").read().strip()
    if os.path.exists(base + ".pg.txt"):
        with open(base + ".pg.txt") as f:
            text = f.read()
        tps = re.search(r"^tps = ([0-9.]+)", text, re.M)
        lat = re.search(r"^latency average = ([0-9.]+) ms", text, re.M)
        if tps and lat and "error=" not in text:
            rec["pgbench_tps"] = round(float(tps.group(1)), 1)
            rec["pgbench_latency_ms"] = round(float(lat.group(1)), 2)
        else:
            rec["pgbench_error"] = text.strip().splitlines()[-1] if text.strip() else "no output"
    return rec


def key_values(raw, name, prefix):
    """KEY=integer lines of RAW/name as {prefix + KEY: int}, or None."""
    path = os.path.join(raw, name)
    if not os.path.exists(path):
        return None
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if value.isdigit():
                out[prefix + key] = int(value)
    return out or None


def relocation(raw):
    """Relocation time under a write load: {relocation_wall_ms, relocation_engine_ms}."""
    return key_values(raw, "relocation.txt", "relocation_")


def resync(raw):
    """Resync after a partition: bytes written meanwhile, bytes moved, time, MB/s."""
    out = key_values(raw, "resync.txt", "resync_")
    if out and out.get("resync_heal_to_insync_ms"):
        out["resync_mbps"] = round(
            out["resync_moved_bytes"] / (out["resync_heal_to_insync_ms"] / 1000) / 1e6, 1)
        if out.get("resync_written_bytes"):
            out["resync_moved_per_written"] = round(
                out["resync_moved_bytes"] / out["resync_written_bytes"], 2)
    return out


def machine(raw):
    info = {}
    path = os.path.join(raw, "machine.txt")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                info[key] = value
    return info


def main():
    raw, latest, md = sys.argv[1:4]
    keys = set()
    for name in os.listdir(raw):
        if "@" in name:
            case, _, rest = name.partition("@")
            keys.add((case, rest.split(".")[0]))
    info = machine(raw)
    records = []
    for case, rtt in sorted(keys, key=lambda k: (float(k[1]), ORDER.index(k[0]) if k[0] in ORDER else 99)):
        rec = record(raw, case, rtt)
        rec["machine"] = info
        records.append(rec)
    empty = {"rtt_ms": 0.0, **dict.fromkeys(FIGURES)}
    reloc = relocation(raw)
    if reloc:
        records.append({"case": "relocation-sync-2dc", **empty, **reloc, "machine": info})
    rs = resync(raw)
    if rs:
        records.append({"case": "resync-sync-2dc", **empty, **rs, "machine": info})
    with open(latest, "w") as f:
        json.dump(records, f, indent=2)
        f.write("\n")
    write_markdown(md, records, info)


def fmt(v):
    return "-" if v is None else f"{v:g}"


def find(records, case, rtt=0.0):
    for r in records:
        if r["case"] == case and r["rtt_ms"] == rtt and "skipped" not in r:
            return r
    return None


def ratio_goal(label, value, base, want):
    if value is None or base is None or not base:
        return f"- {label}: not measured."
    got = value / base
    verdict = "met" if got >= want else f"missed by {(want - got) / want * 100:.0f}%"
    return f"- {label}: {value:g} vs {base:g} = {got:.2f}x (goal {want:g}x): {verdict}."


# Higher is better for each of these (the ratio goals compare them).
JOB_LABELS = [("write_fsync_4k_iops", "4K write+sync IOPS"), ("randread_4k_iops", "4K randread IOPS"),
              ("seqwrite_1m_mbps", "1M sequential MB/s"), ("overwrite_4k_iops", "4K overwrite IOPS"),
              ("pgbench_tps", "pgbench TPS")]


def bound_goal(label, value, bound, what):
    if value is None or bound is None:
        return f"- {label}: not measured."
    verdict = "met" if value <= bound else f"missed by {value - bound:.0f} us"
    return f"- {label}: {value:g} us, bound {what} = {bound:.0f} us: {verdict}."


def goals(records):
    """One line per goal of the data path issue, computed from this run."""
    out = []
    g = lambda r, k: r.get(k) if r else None
    local, limit = find(records, "roam-local"), find(records, "local-limit")
    for rtt in sorted({r["rtt_ms"] for r in records if r["case"] == "gluster-replica2"}):
        sync2, gl = find(records, "roam-sync-2dc", rtt), find(records, "gluster-replica2", rtt)
        flush2, sync3 = find(records, "roam-sync-flush-2dc", rtt), find(records, "roam-sync-3dc", rtt)
        at = f"at {rtt:g} ms"
        if rtt == 0:
            out.append(ratio_goal(f"`roam-sync-2dc` / `gluster-replica2`, 4K write+sync IOPS {at}",
                                  g(sync2, "write_fsync_4k_iops"), g(gl, "write_fsync_4k_iops"), 2.0))
            out.append(ratio_goal(f"`roam-sync-2dc` / `gluster-replica2`, 1M sequential MB/s {at}",
                                  g(sync2, "seqwrite_1m_mbps"), g(gl, "seqwrite_1m_mbps"), 1.5))
        else:
            out.append(ratio_goal(f"`roam-sync-2dc` / `gluster-replica2`, 1M sequential MB/s {at}",
                                  g(sync2, "seqwrite_1m_mbps"), g(gl, "seqwrite_1m_mbps"), 1.5))
            for key, label in JOB_LABELS:
                out.append(ratio_goal(f"`roam-sync-2dc` / `gluster-replica2`, {label} {at}",
                                      g(sync2, key), g(gl, key), 1.0))
            for key in ("write_fsync_4k_iops", "pgbench_tps"):
                label = dict(JOB_LABELS)[key]
                out.append(ratio_goal(f"`roam-sync-flush-2dc` / `gluster-replica2`, {label} {at}",
                                      g(flush2, key), g(gl, key), 2.0))
        base = g(local, "overwrite_4k_p50_us")
        for case, rtts in (("roam-sync-flush-2dc", 1), ("roam-sync-2dc", 2)):
            r = find(records, case, rtt)
            bound = None if base is None else base + rtts * rtt * 1000 + 500
            out.append(bound_goal(f"`{case}` 4K overwrite p50 {at}", g(r, "overwrite_4k_p50_us"), bound,
                                  f"`roam-local` p50 + {rtts} RTT + 500 us"))
        for key, label in JOB_LABELS:
            out.append(ratio_goal(f"`roam-sync-3dc` / `roam-sync-2dc`, {label} {at}",
                                  g(sync3, key), g(sync2, key), 0.9))
    out.append(ratio_goal("`roam-local` / `local-limit`, 4K write+sync IOPS",
                          g(local, "write_fsync_4k_iops"), g(limit, "write_fsync_4k_iops"), 0.8))
    out.append(ratio_goal("`roam-local` / `local-limit`, 1M sequential MB/s",
                          g(local, "seqwrite_1m_mbps"), g(limit, "seqwrite_1m_mbps"), 0.7))
    base = g(local, "write_fsync_4k_p50_us")
    for r in records:
        if not r["case"].startswith("roam-sync") or "skipped" in r or base is None:
            continue
        p50 = r.get("write_fsync_4k_p50_us")
        if p50 is None:
            continue
        bound = base + r["rtt_ms"] * 1000 + 300
        verdict = "met" if p50 <= bound else f"missed by {p50 - bound:.0f} us"
        out.append(f"- `{r['case']}` at {r['rtt_ms']:g} ms: p50 {p50:g} us, bound "
                   f"`roam-local` p50 + RTT + 300 us = {bound:.0f} us: {verdict}.")
    for r in records:
        wa = r.get("write_amplification")
        if r["case"].startswith("roam-") and wa is not None:
            out.append(f"- `{r['case']}` at {r['rtt_ms']:g} ms: {wa:g} disk bytes per user byte "
                       f"per replica (goal at most 1.1): {'met' if wa <= 1.1 else f'missed by {(wa - 1.1) / 1.1 * 100:.0f}%'}.")
    reloc = find(records, "relocation-sync-2dc")
    ms = g(reloc, "relocation_wall_ms")
    if ms is not None:
        out.append(f"- Relocation under write load: {ms} ms (goal 200 ms): "
                   f"{'met' if ms <= 200 else 'missed'}.")
    return out


# Where the time goes, from profiling this data path; written by hand and
# updated when the data path changes.
PROFILE_NOTES = """
## The run of 2026-12-02 (protocol C, both sync levels)

The tables above are the first run since secondaries acknowledge from their
journal file and push their durable position (protocol C), with the Flush
level beside the default, and with the database jobs. Same machine, quiet
(nothing else running; the load average at the start was what the build
before it left). Against the run of 2026-11-25 below, in ratios to Gluster
measured in the same run: 4K write+sync at 0 ms went from 0.74x to 1.11x,
1 MiB sequential at 0 ms from 0.69x to 1.00x; at 2 ms 4K write+sync is still
0.58x (Write level) and 0.78x (Flush level), because the ext4 inside the
volume turns one O_DSYNC write into several dependent writes and flushes, and
each flush is a round trip. What a database does fares better: 4K overwrites
with fdatasync at 2 ms are 1.97x Gluster's IOPS, pgbench 1.68x at the Write
level and 2.03x at the Flush level. Write amplification is 2.0 per replica
for every Roam case (the data journal: each byte goes to the journal and to
the real volume), against 1.0 for `local-limit`, `roam-frontend` and Gluster:
the activity log that would bring it to 1.1 is not built. `roam-sync-3dc` at
0 ms measured 0.36x `roam-sync-2dc` on 4K write+sync in this run and 1.10x at
2 ms; one disk serves all three replicas here, and the 0 ms figures of that
case moved by 2.7x between runs (384 on 2026-11-25), so it needs more runs
before it says anything about the fan-out.

## Where the time goes

Profiled with `BENCH_PROFILE=1 make bench` (the run of 2026-11-25 18:56 UTC,
the table above when it was written): perf samples both
cores (cpu-clock; this machine has no hardware counters) during every fio
job into `bench/results/raw/<case>@<rtt>.<job>.profile.txt`, and for the
replicated cases the primary's `/metrics` are read before and after each job,
which counts the requests that reach the replica per fio I/O. The machine is
2 shared cores with one virtio disk; the same binaries move by 30% and more
between runs (`local-limit` sequential writes gave 637 and 1134 MB/s in two
runs 20 minutes apart), so compare cases within one run.

- **One 4K O_DSYNC write is about 3.6 writes and 2.4 flushes of the
  volume.** Measured on the primary for `roam-sync-2dc` at 0 ms (3757 fio
  I/Os: 13442 writes, 8958 flushes) and at 2 ms (3.57 and 2.37 per I/O).
  fio lays its file out as unwritten extents, so each write into the ext4
  inside the volume also converts an extent through ext4's journal: the data
  block, the journal's blocks, then the commit block behind a flush. In a
  Sync group every write waits for the secondary, and these steps depend on
  each other, so a 4K write+sync costs about four round trips: 10.2 ms p50
  at 2 ms added RTT, where the goal's bound (one RTT) is 3.1 ms. The flushes
  themselves are nearly free (3 to 4 us mean at the primary) because the
  writes before them were already durable on the secondary. Gluster's client
  sees fio's write and fsync as file operations, with no filesystem between
  them and its replication: 6.5 ms p50 at 2 ms. This is the price of
  replicating a block device under a filesystem, and the reason
  `roam-sync-2dc` is at 0.74x Gluster's IOPS rather than 2x. Acknowledging
  Sync writes before the secondary holds them would remove it, but a Sync
  write must be on every in-sync secondary when it is acknowledged.
- **The CPU is not the limit.** Idle share (swapper) while `roam-sync-2dc`
  ran: 37% (4K write+sync, 0 ms), 48% (1M sequential), 69% (4K at 2 ms);
  `roam-local` 1M sequential: 56%. The busy Roam threads are the async
  runtime's workers (page-cache copies of the data and the journal record,
  crc32c, gRPC), 16-31%; the delay proxy, 4-9%; the journal thread, 2-10%;
  the FUSE threads, 2-11%. The time is spent waiting: for the secondary and
  for the one disk.
- **Sequential writes: every byte four times on the one disk.** Journal and
  real volume, on the primary and on the secondary, against twice for
  `gluster-replica2` (a brick each) and once for `local-limit`. With a disk
  per data center the secondary's two writes leave this disk.
- **A write no longer waits for an fdatasync (changed).** The journal record
  is written into the journal file (page cache) before the write is
  acknowledged, which is what surviving `kill -9` needs; the commit thread
  syncs right behind, and a flush or FUA write waits for that sync. 4K
  write+sync is unchanged (the flush finds the sync under way), `roam-local`
  sequential went from 184 to about 276 MB/s.
- **A checkpoint no longer holds writes for a full volume sync (changed).**
  Every 64 MiB of journal the real volume is synced and the journal emptied.
  That sync ran under the volume's state lock, so under sequential writes
  (43 checkpoints in 10 s) writes stood still for a third of the time. The
  bulk is now synced first with writes flowing, and the locked sync only
  takes what came in meanwhile: `roam-local` sequential 276 -> 408 MB/s in
  one run against `local-limit` 637 (0.64x), 312 against 1134 (0.27x) in the
  profiled run. What remains is the second write of every byte and the copies
  on the way (FUSE to user space, into the journal record, into two page
  caches).
- **Earlier fixes.** A flush used to fdatasync the real volume besides the
  journal, and the journal grew with every commit, so every sync was also a
  metadata commit (4 KiB append + fdatasync on this disk: 225-355/s;
  overwrite: 656-674/s); the journal is now written over in place. The
  replicated cases stage the volume inside the primary's storage system, as
  the node plugin does. The delay proxy relays on OS threads (1000 us each
  way measured 2.26 ms RTT p50). FUSE allows 64 background requests.
"""


def write_markdown(md, records, info):
    lines = [
        "# Benchmarks",
        "",
        "`make bench` runs `bench/run.sh`: fio on an ext4 filesystem mounted through each",
        "data path, side by side in one run, then writes `bench/results/latest.json` and",
        "these tables. Jobs: `write_fsync_4k` is 4 KiB random writes opened with",
        "`O_DIRECT|O_DSYNC` at queue depth 1 (each write durable before the next);",
        "`randread_4k` is 4 KiB random reads at depth 16; `seqwrite_1m` is 1 MiB",
        "sequential writes at depth 4 ending with an fsync; `overwrite_4k` is 4 KiB",
        "random overwrites of a fully written file, each followed by fdatasync (what a",
        "database does to its preallocated files; p50 of the write plus its sync);",
        "pgbench is PostgreSQL (Debian's) initialized on the mounted volume, its",
        "TPC-B-like script, a fixed number of transactions; write amplification is the",
        "bytes the host's disk took (its sectors-written counter, after a sync) per",
        "byte of a 1 MiB sequential write, divided by the copies the case keeps on",
        "this one disk (2 for a 2-DC group or Gluster replica 2).",
        "",
        "Cases: `local-limit` is ext4 on a loop device over a plain file (the machine's",
        "ceiling); `roam-frontend` is Roam's FUSE -> loop stack over a plain file (the",
        "frontend's ceiling, no journal, no replication); `roam-local` is the same",
        "stack over an in-process replica (journal + real volume, the primary on the",
        "host's node); `roam-sync-*`/`roam-async-*` stage the volume in the primary's",
        "storage system process (`roam-csi storage --stage-volume`, the in-process",
        "path the node plugin takes when the primary is on its node) while each",
        "secondary is a `roam-csi storage` process in its own network namespace",
        "behind a delay proxy; `gluster-replica2` is GlusterFS replica 2 with both",
        "bricks on this host, its client in a network namespace reaching brick 2",
        "through the same delay proxy. `roam-sync-flush-2dc` is `roam-sync-2dc` at",
        "`syncLevel: Flush` (a write waits for the primary only, a flush for the",
        "in-sync set). Added RTT comes from the delay proxy (this kernel has",
        "no netem). Release builds.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| case | added RTT ms | 4K write+sync IOPS | p50 us | p99 us | 4K randread IOPS | 1M seq write MB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    second = [
        "",
        "| case | added RTT ms | 4K overwrite+fdatasync IOPS | p50 us | pgbench TPS | latency ms | disk bytes per user byte per replica |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in records:
        if r["case"].startswith("relocation"):
            notes.append(f"- Relocation of a Sync 2-DC volume under a 4K O_DSYNC write load: "
                         f"{r.get('relocation_wall_ms', '-')} ms for the TransferPrimary call, "
                         f"{r.get('relocation_engine_ms', '-')} ms as the old primary measured it "
                         f"(fence, write out, hand over).")
            continue
        if r["case"].startswith("resync"):
            notes.append(
                f"- Resync of a Sync 2-DC volume (Degrade) after its secondary was cut off while "
                f"{r.get('resync_written_bytes', 0) / 1e6:.1f} MB of 1 MiB random writes landed: "
                f"{r.get('resync_moved_bytes', 0) / 1e6:.1f} MB crossed the secondary's proxy "
                f"({fmt(r.get('resync_moved_per_written'))}x the bytes written; regions are "
                f"64 KiB and a region written twice travels once), "
                f"{r.get('resync_heal_to_insync_ms', '-')} ms from the heal to InSync "
                f"(reconnect backoff included): at least {fmt(r.get('resync_mbps'))} MB/s.")
            continue
        if "skipped" in r:
            notes.append(f"- `{r['case']}` at {r['rtt_ms']:g} ms: not measured: {r['skipped']}.")
            continue
        lines.append(f"| {r['case']} | {r['rtt_ms']:g} | {fmt(r['write_fsync_4k_iops'])} | "
                     f"{fmt(r['write_fsync_4k_p50_us'])} | {fmt(r['write_fsync_4k_p99_us'])} | "
                     f"{fmt(r['randread_4k_iops'])} | {fmt(r['seqwrite_1m_mbps'])} |")
        second.append(f"| {r['case']} | {r['rtt_ms']:g} | {fmt(r['overwrite_4k_iops'])} | "
                      f"{fmt(r['overwrite_4k_p50_us'])} | {fmt(r['pgbench_tps'])} | "
                      f"{fmt(r['pgbench_latency_ms'])} | {fmt(r['write_amplification'])} |")
        for key in ("pgbench_error", "write_amplification_error"):
            if key in r:
                notes.append(f"- `{r['case']}` at {r['rtt_ms']:g} ms, {key.split('_error')[0]}: {r[key]}.")
    lines += second
    if notes:
        lines += ["", "Notes:", ""] + notes
    lines += ["", "## Goals", ""] + goals(records)
    lines += ["", PROFILE_NOTES.strip()]
    scale = os.path.join(os.path.dirname(md), "..", "bench", "results", "operator-scale.txt")
    if os.path.exists(scale):
        with open(scale) as f:
            lines += ["", "## Operator scale", "", "From `bench/operator-scale.sh`:", "", "```",
                      f.read().rstrip(), "```"]
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

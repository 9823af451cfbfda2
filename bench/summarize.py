#!/usr/bin/env python3
"""Turn the raw fio JSON of bench/run.sh into bench/results/latest.json and
the table in docs/benchmarks.md.

usage: summarize.py RAW_DIR LATEST_JSON BENCHMARKS_MD
"""
import json
import os
import sys

ORDER = ["local-limit", "roam-frontend", "roam-local", "roam-sync-2dc",
         "roam-async-2dc", "roam-sync-3dc", "gluster-replica2"]


def job(path, kind):
    with open(path) as f:
        data = json.load(f)
    return data["jobs"][0][kind]


def pct(clat, p):
    return round(clat["percentile"][p] / 1000.0, 1)


def record(raw, case, rtt):
    base = os.path.join(raw, f"{case}@{rtt}")
    rec = {"case": case, "rtt_ms": float(rtt), "write_fsync_4k_iops": None,
           "write_fsync_4k_p50_us": None, "write_fsync_4k_p99_us": None,
           "randread_4k_iops": None, "seqwrite_1m_mbps": None}
    if os.path.exists(base + ".skip"):
        with open(base + ".skip") as f:
            rec["skipped"] = f.read().strip()
        return rec
    wf = job(base + ".wf.json", "write")
    rec["write_fsync_4k_iops"] = round(wf["iops"], 1)
    rec["write_fsync_4k_p50_us"] = pct(wf["clat_ns"], "50.000000")
    rec["write_fsync_4k_p99_us"] = pct(wf["clat_ns"], "99.000000")
    rec["randread_4k_iops"] = round(job(base + ".rr.json", "read")["iops"], 1)
    # fio reports bw in KiB/s.
    rec["seqwrite_1m_mbps"] = round(job(base + ".sw.json", "write")["bw"] * 1024 / 1e6, 1)
    return rec


def relocation(raw):
    """Relocation time under a write load: {relocation_wall_ms, relocation_engine_ms}."""
    path = os.path.join(raw, "relocation.txt")
    if not os.path.exists(path):
        return None
    out = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.strip().partition("=")
            if value.isdigit():
                out["relocation_" + key] = int(value)
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
    reloc = relocation(raw)
    if reloc:
        records.append({"case": "relocation-sync-2dc", "rtt_ms": 0.0,
                        "write_fsync_4k_iops": None, "write_fsync_4k_p50_us": None,
                        "write_fsync_4k_p99_us": None, "randread_4k_iops": None,
                        "seqwrite_1m_mbps": None, **reloc, "machine": info})
    with open(latest, "w") as f:
        json.dump(records, f, indent=2)
        f.write("\n")
    write_markdown(md, records, info)


def fmt(v):
    return "-" if v is None else f"{v:g}"


def write_markdown(md, records, info):
    lines = [
        "# Benchmarks",
        "",
        "`make bench` runs `bench/run.sh`: fio on an ext4 filesystem mounted through each",
        "data path, side by side in one run, then writes `bench/results/latest.json` and",
        "this table. Jobs: `write_fsync_4k` is 4 KiB random writes opened with",
        "`O_DIRECT|O_DSYNC` at queue depth 1 (each write durable before the next);",
        "`randread_4k` is 4 KiB random reads at depth 16; `seqwrite_1m` is 1 MiB",
        "sequential writes at depth 4 ending with an fsync.",
        "",
        "Cases: `local-limit` is ext4 on a loop device over a plain file (the machine's",
        "ceiling); `roam-frontend` is Roam's FUSE -> loop stack over a plain file (the",
        "frontend's ceiling, no journal, no replication); `roam-local` is the same",
        "stack over an in-process replica (journal + real volume, the primary on the",
        "host's node); `roam-sync-*`/`roam-async-*` run against `roam-csi storage`",
        "processes in their own network namespaces with a delay proxy in front of",
        "every peer; `gluster-replica2` is GlusterFS replica 2 with both bricks on",
        "this host. Added RTT comes from the delay proxy (this kernel has no netem).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()),
        "",
        "| case | added RTT ms | 4K write+sync IOPS | p50 us | p99 us | 4K randread IOPS | 1M seq write MB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in records:
        if r["case"].startswith("relocation"):
            notes.append(f"- Relocation of a Sync 2-DC volume under a 4K O_DSYNC write load: "
                         f"{r.get('relocation_wall_ms', '-')} ms for the TransferPrimary call, "
                         f"{r.get('relocation_engine_ms', '-')} ms as the storage system measured it.")
            continue
        if "skipped" in r:
            notes.append(f"- `{r['case']}` at {r['rtt_ms']:g} ms: not measured: {r['skipped']}.")
            continue
        lines.append(f"| {r['case']} | {r['rtt_ms']:g} | {fmt(r['write_fsync_4k_iops'])} | "
                     f"{fmt(r['write_fsync_4k_p50_us'])} | {fmt(r['write_fsync_4k_p99_us'])} | "
                     f"{fmt(r['randread_4k_iops'])} | {fmt(r['seqwrite_1m_mbps'])} |")
    if notes:
        lines += ["", "Notes:", ""] + notes
    scale = os.path.join(os.path.dirname(md), "..", "bench", "results", "operator-scale.txt")
    if os.path.exists(scale):
        with open(scale) as f:
            lines += ["", "## Operator scale", "", "From `bench/operator-scale.sh`:", "", "```",
                      f.read().rstrip(), "```"]
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

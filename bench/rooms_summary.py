"""Summary of bench/rooms.sh: medians per scenario and protocol, and the
broker/peer ratios. Input: the fanout.mjs JSON lines (with a "scenario"
field) and the idle_rss.sh lines."""

import json
import statistics
import sys


def cpu_us_per_delivery(run):
    """Server CPU (both instances, not Redis) per delivery, microseconds.
    fanout.mjs reports % of one core over the measured window (send + drain)."""
    instances = [c for c in run.get("server_cpu_pct", [])[:2] if c is not None]
    if not instances or not run["deliveries"]:
        return None
    seconds = run["send_s"] + 0.2  # the drain is short when nothing is lost
    return sum(instances) / 100 * seconds / run["deliveries"] * 1e6


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(fanout_path, idle_path):
    runs = [json.loads(line) for line in open(fanout_path) if line.startswith("{")]
    rows = {}
    for run in runs:
        rows.setdefault((run["scenario"], run["proto"]), []).append(run)
    print()
    print("| scenario | server | runs | msg/s | p50 ms | p99 ms | CPU us/delivery | lost | dup | disconnects | client CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    medians = {}
    for (scenario, proto), group in sorted(rows.items()):
        m = {
            "rate": median([r["sent"] / r["send_s"] for r in group if r["send_s"]]),
            "p50": median([r["p50_ms"] for r in group]),
            "p99": median([r["p99_ms"] for r in group]),
            "cpu": median([cpu_us_per_delivery(r) for r in group]),
            "lost": sum(r["lost"] for r in group),
            "dup": sum(r["duplicates"] for r in group),
            "disc": sum(r["disconnects"] for r in group),
            "client": median([r["client_cpu_pct"] for r in group]),
        }
        medians[(scenario, proto)] = m
        label = {"a": "2 x 50 @ 500/s", "k": "2 x 10 @ 1000/s"}.get(scenario, scenario)
        print(
            f"| {label} | {proto} | {len(group)} | {m['rate']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} "
            f"| {m['cpu']:.1f} | {m['lost']} | {m['dup']} | {m['disc']} | {m['client']:.0f} |"
        )
    print()
    for scenario in sorted({s for s, _ in medians}):
        b, p = medians.get((scenario, "broker")), medians.get((scenario, "socketio"))
        if b and p:
            print(
                f"scenario {scenario}: broker/peer p99 {b['p99'] / p['p99']:.2f}, "
                f"p50 {b['p50'] / p['p50']:.2f}, CPU per delivery {b['cpu'] / p['cpu']:.2f}"
            )
    idle = {}
    for line in open(idle_path):
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "kb_per_conn" in fields:
            idle[fields["proto"]] = fields
            print(
                f"idle: {fields['proto']} {fields['conns']} conns: {fields['kb_per_conn']} KiB per connection "
                f"(RSS {fields['rss_before_kb']} -> {fields['rss_after_kb']} KiB)"
            )
    if "broker" in idle and "socketio" in idle:
        ratio = float(idle["broker"]["kb_per_conn"]) / float(idle["socketio"]["kb_per_conn"])
        print(f"idle: broker/peer memory per connection {ratio:.2f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

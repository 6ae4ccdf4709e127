"""Benchmark: multi-device scheduling (DeePar Fig. 4 settings) with splitc's exact three-tier partitioner.

Scenarios come from ``splitc.schedule.scenario.generate`` with the paper's ranges (section V-B): B_i^1 in
[20, 300] Mbps, B_i^2 in [10, 50] Mbps, B_e^1 in [5, 20] Gbps, B_e^2 in [0.1, 5] Gbps, r_e in [1, 10],
N_i in [1, 1000]; tasks are VGG-16-, ResNet-50- and LeNet-shaped (splitc.schedule.models) on a
snapdragon-835 device, gtx-1080ti edge servers and a t4 cloud, costs from splitc's roofline cost model.
Settings: (a) 10 edge servers, 20-80 devices, arrivals within 300 s; (b) within 50 s; (c) 40 edge servers
(within 50 s); and a congested variant of (b) with r_e in [1, 2] and B_e^2 in [0.1, 0.5] Gbps.
Writes bench/results/schedule.md, schedule.json and schedule.png.

    python bench/schedule.py [--seeds 2] [--ilp-limit 60]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitc.schedule.policies import check_feasible, run_policy  # noqa: E402
from splitc.schedule.scenario import generate, parse_scenario  # noqa: E402

RESULTS = ROOT / "bench" / "results"
POLICIES = ["device-only", "edge-only", "cloud-only", "deepar", "splitc", "ilp"]
LABEL = {"deepar": "DeePar online", "splitc": "splitc online", "ilp": "offline ILP"}
SETTINGS = [("(a) 10 edges, 300 s", 10, 300.0, False), ("(b) 10 edges, 50 s", 10, 50.0, False),
            ("(c) 40 edges, 50 s", 40, 50.0, False), ("(d) congested: 10 edges, 50 s, r_e<=2", 10, 50.0, True)]


def scenario(devices, edges, window, congested, seed):
    data = generate(devices, edges, window, seed=seed)
    if congested:
        rng = np.random.default_rng(seed + 99)
        for e in data["edges"]:
            e["slots"] = int(rng.integers(1, 3))
            e["backbone_mbps"] = float(rng.uniform(100, 500))
    return parse_scenario(data)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--ilp-limit", type=float, default=60.0)
    args = parser.parse_args()
    rows = []
    start = time.time()
    for label, edges, window, congested in SETTINGS:
        for devices in (20, 40, 60, 80):
            totals = {p: [] for p in POLICIES}
            optimal = []
            for seed in range(args.seeds):
                scn = scenario(devices, edges, window, congested, seed)
                for p in POLICIES:
                    s = run_policy(scn, p, args.ilp_limit)
                    check_feasible(scn, s.placements)
                    totals[p].append(s.total_s)
                    if p == "ilp":
                        optimal.append(bool(s.optimal))
            row = {"setting": label, "devices": devices, "seeds": args.seeds,
                   "total_s": {p: float(np.mean(v)) for p, v in totals.items()},
                   "ilp_optimal": all(optimal)}
            rows.append(row)
            t = row["total_s"]
            print(f"{label:40s} {devices:3d} " + " ".join(f"{p}={t[p]:.0f}" for p in POLICIES), flush=True)
    elapsed = time.time() - start
    lines = ["# Multi-device scheduling: DeePar Fig. 4 settings", "",
             "Total delay (s, sum over tasks of finish - arrival), mean over "
             f"{args.seeds} random scenarios per cell; mean delay per task = total / devices. Offline ILP: "
             "DeePar eqs. 20-25 solved by CBC (all tasks treated as concurrent, b = B_i, start at arrival; "
             f"limit {args.ilp_limit:g} s), `*` = proved optimal in every scenario. Every schedule is checked "
             "feasible (slots and both bandwidths at every instant). Benchmark wall time: "
             f"{elapsed:.0f} s.", "",
             "| setting | devices | device-only | edge-only | cloud-only | DeePar online | splitc online | "
             "offline ILP | vs device | vs edge | splitc vs DeePar | splitc vs ILP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        t = r["total_s"]
        red = lambda a, b: f"{(1 - t[a] / t[b]) * 100:+.1f}%"  # noqa: E731
        lines.append(f"| {r['setting']} | {r['devices']} | " + " | ".join(f"{t[p]:.0f}" for p in POLICIES[:-1])
                     + f" | {t['ilp']:.0f}{'*' if r['ilp_optimal'] else ''} | {red('splitc', 'device-only')} | "
                     f"{red('splitc', 'edge-only')} | {red('splitc', 'deepar')} | "
                     f"{(t['splitc'] / t['ilp'] - 1) * 100:+.1f}% |")
    lines += ["", "Columns 'vs ...': reduction of splitc online's total delay (positive = lower). "
              "'splitc vs ILP': how much higher splitc's total is than the ILP's (negative = lower: the "
              "online policies reuse resources freed over time, which the batch ILP cannot).", "",
              "Mean delay per task (s):", "", "| setting | devices | " + " | ".join(
                  LABEL.get(p, p) for p in POLICIES) + " |", "|---|---:|" + "---:|" * len(POLICIES)]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['devices']} | " + " | ".join(
            f"{r['total_s'][p] / r['devices']:.2f}" for p in POLICIES) + " |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "schedule.json").write_text(json.dumps(rows, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(SETTINGS), figsize=(5 * len(SETTINGS), 4), sharey=False)
        for ax, (label, *_rest) in zip(axes, SETTINGS):
            mine = [r for r in rows if r["setting"] == label]
            x = [r["devices"] for r in mine]
            for p in POLICIES:
                ax.plot(x, [r["total_s"][p] for r in mine], marker="o", label=LABEL.get(p, p))
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("devices")
            ax.set_ylabel("total delay (s)")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(RESULTS / "schedule.png", dpi=110)
        lines += ["", "![total delay](schedule.png)"]
    except ImportError:
        pass
    (RESULTS / "schedule.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

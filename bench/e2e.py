"""End-to-end benchmark driver: splitc plans vs Origin2Cloud, PNG2Cloud, JPEG2Cloud and edge-only.

Models: the digits CNN (trained, real labels) and ResNet-50- and VGG-16-shaped
networks built here with onnx.helper: seeded random backbones whose classifier
is trained on a 12-class photo task (``bench/photos.py``: which of twelve
bundled photographs a 224x224 crop comes from; held-out crops come from parts
of the photographs never seen in training). Every request goes through the
user-space netem proxy to a real in-process ``splitc serve``.
Writes bench/results/e2e.md, e2e.json and e2e.png.

    python bench/e2e.py [--quick] [--models digits,resnet50,vgg16] [--requests 20] [--keep-others]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import photos  # noqa: E402
from splitc.tools.bench_e2e import BenchConfig, _plan_text, markdown, plot, run_model_bench  # noqa: E402
from splitc.schedule.models import resnet50, vgg16  # noqa: E402  (the shared VGG-16/ResNet-50 layouts)
from splitc.units import parse_bandwidth  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DIGITS = ROOT / "examples" / "digits"


def configs(args, work: Path) -> list[BenchConfig]:
    bandwidths = sorted(parse_bandwidth(b) for b in args.bw.split(","))
    out = []
    if "digits" in args.models:
        out.append(BenchConfig(DIGITS / "digits_cnn.onnx", "raspberry-pi-4", args.cloud, bandwidths, args.rtt,
                               DIGITS / "calib.npz", DIGITS / "test.npz", 0.01, args.requests, work / "digits",
                               name="digits_cnn", test_limit=args.test))
    for name, build, bits in (("resnet50", resnet50, args.bits), ("vgg16", vgg16, args.vgg_bits)):
        if name not in args.models:
            continue
        model = build()
        facts = photos.fit_head(model, *photos.crops(args.train, "train", seed=11))
        print(f"{name}: classifier trained on {facts['train_images']} crops, {facts['classes']} classes "
              f"(train accuracy {facts['train_accuracy']:.3f})", flush=True)
        calib, calib_labels = photos.crops(args.calib, "train", seed=21)
        test, test_labels = photos.crops(args.test, "test", seed=31)
        np.savez(work / f"{name}-calib.npz", input=calib, labels=calib_labels)
        np.savez(work / f"{name}-test.npz", input=test, labels=test_labels)
        out.append(BenchConfig(model, args.target, args.cloud, bandwidths, args.rtt, work / f"{name}-calib.npz",
                               work / f"{name}-test.npz", 0.01, args.requests, work / name, name=name,
                               bits=bits, test_limit=args.test, edge_precision=args.edge_precision))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,resnet50,vgg16")
    parser.add_argument("--bw", default="300KBps,1MBps,5Mbps")
    parser.add_argument("--rtt", type=float, default=20.0)
    parser.add_argument("--target", default="jetson-tx2")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--cloud", default="gtx-1080ti")
    parser.add_argument("--train", type=int, default=240, help="crops the ImageNet-shaped models' classifiers learn")
    parser.add_argument("--calib", type=int, default=96, help="calibration crops (with labels) for their compile")
    parser.add_argument("--test", type=int, default=144, help="held-out crops for every method's accuracy")
    parser.add_argument("--bits", default="auto", help="bits of the ResNet-50 plans (auto: chosen jointly)")
    parser.add_argument("--vgg-bits", default="auto", help="bits of the VGG-16 plans")
    parser.add_argument("--edge-precision", default="fp16",
                        help="precision of splitc's edge halves for the ImageNet-shaped models on the TX2 (fp32, fp16)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/splitc-e2e"))
    parser.add_argument("--quick", action="store_true", help="digits only, 5 requests")
    parser.add_argument("--render", action="store_true", help="rewrite e2e.md and e2e.png from e2e.json only")
    parser.add_argument("--keep-others", action="store_true",
                        help="keep the committed results of the models not in --models (re-measure one model)")
    args = parser.parse_args()
    if args.quick:
        args.models, args.requests = "digits", 5
    args.bits, args.vgg_bits = (b if b == "auto" else int(b) for b in (args.bits, args.vgg_bits))
    if args.render:
        write(json.loads((RESULTS / "e2e.json").read_text()), args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for config in configs(args, args.work):
        start = time.perf_counter()
        results.append(run_model_bench(config, progress=lambda line: print(line, flush=True)))
        results[-1]["bench_seconds"] = time.perf_counter() - start
        write(results, args)  # after every model, so a long run's finished models are kept


# JALAD (Li et al., ICPADS 2018) Table II: speed-up over (PNG2Cloud, Origin2Cloud) at a 10% accuracy bound.
JALAD_TABLE_II = {("vgg16", 1e6): (1.4, 2.2), ("vgg16", 3e5): (3.6, 6.0),
                  ("resnet50", 1e6): (2.3, 3.7), ("resnet50", 3e5): (7.2, 11.7)}


def versus_jalad(results: list[dict]) -> list[str]:
    """splitc's speed-ups next to JALAD's Table II, for the rows both have."""
    lines = ["## Against JALAD's Table II", "",
             "splitc at a 1% accuracy bound (checked on the calibration crops); JALAD's figures are at a 10% bound.",
             "", "| model | bandwidth | splitc plan | vs PNG2Cloud (JALAD) | vs Origin2Cloud (JALAD) | both met |",
             "|---|---|---|---|---|---|"]
    for result in results:
        for row in result["rows"]:
            jalad = JALAD_TABLE_II.get((result["model"], row["bandwidth_Bps"]))
            if jalad is None:
                continue
            ours = [row[m]["median_ms"] / row["splitc"]["median_ms"] for m in ("PNG2Cloud", "Origin2Cloud")]
            met = all(o >= j for o, j in zip(ours, jalad))
            lines.append(f"| {result['model']} | {row['bandwidth_Bps'] / 1e3:g} KB/s | {_plan_text(row['splitc'])} | "
                         f"{ours[0]:.2f}x ({jalad[0]}x) | {ours[1]:.2f}x ({jalad[1]}x) | {'yes' if met else 'no'} |")
    return lines + [""] if len(lines) > 6 else []


def merged(results: list[dict], args) -> list[dict]:
    """``results`` plus, with --keep-others, the committed results of models this run did not measure."""
    if not args.keep_others or not (RESULTS / "e2e.json").is_file():
        return results
    fresh = {r["model"] for r in results}
    kept = [r for r in json.loads((RESULTS / "e2e.json").read_text()) if r["model"] not in fresh]
    order = ["digits_cnn", "resnet50", "vgg16"]
    return sorted(kept + results, key=lambda r: order.index(r["model"]) if r["model"] in order else len(order))


def write(results: list[dict], args) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = merged(results, args)
    header = [
        "# End-to-end benchmark (bench/e2e.py)", "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}. Link: the "
        f"user-space netem proxy (token bucket per direction, RTT {args.rtt:g} ms). Server: `splitc serve` in "
        "process (uvicorn, 1 worker thread). Emulated = each half's host time x (the target's predicted time for "
        "that half / this host's profiled time for it, from `splitc profile`; docs/benchmark.md); host = measured "
        "wall time here. Speed-up = the method's emulated median / splitc's.", "",
    ]
    body = versus_jalad(results) + [markdown(r) for r in results]
    (RESULTS / "e2e.md").write_text("\n".join(header + body) + "\n")
    (RESULTS / "e2e.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(results, RESULTS / "e2e.png")
    print(body[-1], flush=True)


if __name__ == "__main__":
    main()

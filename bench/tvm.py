"""Benchmark: TVM builds of the zoo models' halves against onnxruntime on the same half.

Each zoo model is split in its middle (``CUTS``, raw float32 cut), so it has an
edge and a cloud half with real work. Every half runs on this machine's CPU in:

  ort      onnxruntime CPUExecutionProvider (what splitc.runtime uses for .onnx)
  default  TVM 0.27, ``relax.get_default_pipeline(llvm -mcpu=<host>)`` (no schedules)
  splitc   TVM 0.27, the same pipeline with NHWC convolutions and the tuning-free
           kernel schedules of ``splitc/backends/tvm/schedule.py`` (the backend's default)

all called the way ``splitc.runtime.Pipeline`` calls them (``run(names, feeds)``
on numpy arrays). Each cell is the median of --repeat calls after warm-up, with
1 thread and with all cores. Writes bench/results/tvm.md and bench/results/tvm.json.

``--metaschedule N`` also tunes chain_cnn's whole model with MetaSchedule for N
trials, in a subprocess (needs psutil and cloudpickle).

    python bench/tvm.py [--quick] [--repeat 200] [--metaschedule 144]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# This script is bench/tvm.py: without its folder on sys.path, `import tvm` finds apache-tvm.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import splitc  # noqa: E402
from splitc.testing import zoo  # noqa: E402
from splitc.backends.tvm.build import build_half, tvm_version  # noqa: E402
from splitc.backends.tvm.targets import host_target  # noqa: E402
from splitc.runtime.tvm_half import TvmHalf  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# A cut in the middle of each model (so both halves have real work), as in tests/test_tvm_backend.py.
CUTS = {
    "chain_cnn": ["stage2/pool"], "resnet_blocks": ["block2/relu"], "inception_blocks": ["inc1/concat"],
    "dense_blocks": ["trans/pool"], "two_in_two_out": ["stage1/pool", "meta"], "constant_weights": ["stage1/pool"],
    "control_flow": ["stage2/pool"], "opset7_cnn": ["stage1/pool"], "transformer_block": ["attn/residual"],
}
CONV_NETS = [name for name in CUTS if name != "transformer_block"]
MODELS = list(CUTS)
QUICK = ["chain_cnn", "resnet_blocks", "inception_blocks"]


def halves(name: str) -> tuple[str, dict[str, onnx.ModelProto], dict[str, np.ndarray]]:
    """The model's cut (``CUTS``), its two halves and inputs for each half."""
    model = zoo.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(model, cut=CUTS[name], bits=32)
    cut = ",".join(CUTS[name])
    feeds = zoo.random_inputs(model)
    session = ort.InferenceSession(split.edge_model.SerializeToString(), providers=["CPUExecutionProvider"])
    edge_out = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    cloud_feeds = {i.name: edge_out[i.name] for i in split.cloud_model.graph.input}
    return cut, {"edge": split.edge_model, "cloud": split.cloud_model}, {"edge": feeds, "cloud": cloud_feeds}


def median_ms(run, repeat: int) -> float:
    """Median wall time of ``run()`` in ms, after a warm-up."""
    for _ in range(max(5, repeat // 20)):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _entry(model: onnx.ModelProto) -> dict:
    return {"inputs": [{"name": i.name} for i in model.graph.input],
            "outputs": [{"name": o.name} for o in model.graph.output]}


def engines(model: onnx.ModelProto, threads: int, work: Path) -> dict:
    """Callables running ``model`` in onnxruntime and in both TVM builds."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    found = {"ort": session}
    for pipeline in ("default", "splitc"):
        path = work / f"{model.graph.name}-{pipeline}.so"
        if not path.exists():
            build_half(model, host_target(), path, pipeline, warn=lambda _m: None)
        found[pipeline] = TvmHalf(path, _entry(model), threads)
    return found


def measure(name: str, threads: int, repeat: int, work: Path) -> list[dict]:
    """One row per half of ``name``: median ms per engine and the ratios to onnxruntime."""
    cut, models, feeds = halves(name)
    rows = []
    for side, model in models.items():
        found = engines(model, threads, work)
        row = {"model": name, "half": side, "cut": cut, "threads": threads}
        for engine, runner in found.items():
            row[engine] = median_ms(lambda: runner.run(None, feeds[side]), repeat)
        row["default_x"], row["splitc_x"] = row["default"] / row["ort"], row["splitc"] / row["ort"]
        rows.append(row)
        print(f"{name:18s} {side:5s} t={threads} ort {row['ort']:.3f} default {row['default']:.3f} "
              f"splitc {row['splitc']:.3f} ms ({row['splitc_x']:.2f}x)", flush=True)
    return rows


def geomean(values: list[float]) -> float:
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def table(rows: list[dict], threads: int) -> list[str]:
    lines = [f"### {threads} thread{'s' if threads > 1 else ''}", "",
             "| model | half | cut | onnxruntime ms | TVM default ms | TVM splitc ms | default / ort | splitc / ort |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    chosen = [r for r in rows if r["threads"] == threads]
    for r in chosen:
        lines.append(f"| {r['model']} | {r['half']} | `{r['cut']}` | {r['ort']:.3f} | {r['default']:.3f} | "
                     f"{r['splitc']:.3f} | {r['default_x']:.1f}x | {r['splitc_x']:.2f}x |")
    conv = [r for r in chosen if r["model"] in CONV_NETS]
    lines += ["", f"Geometric mean over the conv-net halves: default {geomean([r['default_x'] for r in conv]):.1f}x, "
              f"splitc {geomean([r['splitc_x'] for r in conv]):.2f}x, worst splitc "
              f"{max(r['splitc_x'] for r in conv):.2f}x of onnxruntime.", ""]
    return lines


def _skip_tensor_intrin() -> None:
    """In MetaSchedule's builder/runner workers: skip importing ``tvm.s_tir.tensor_intrin``.

    The import takes ~46 s on this machine (18 s of it CUDA intrinsics) and each
    builder batch starts fresh workers, so with it every build times out (the
    default limit is 30 s). float32 CPU kernels use no tensor intrinsics.
    """
    import sys as _sys
    import types

    _sys.modules.setdefault("tvm.s_tir.tensor_intrin", types.ModuleType("tvm.s_tir.tensor_intrin"))


def tune(name: str, trials: int) -> dict:
    """MetaSchedule-tune the whole model (random cost model, 1 core); tuning time and latency vs onnxruntime."""
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    from splitc.backends.tvm.build import compile_module, import_onnx

    model = zoo.build(name)
    feeds = zoo.random_inputs(model)
    target = tvm.target.Target({**host_target().target, "num-cores": 1})
    prepare = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
               relax.get_pipeline("zero")]
    with target:
        mod = tvm.transform.Sequential(prepare)(import_onnx(model))
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        database = ms.relax_integration.tune_relax(
            mod=mod, params={}, target=target, work_dir=work, max_trials_global=trials,
            max_trials_per_task=max(8, trials // 8), num_trials_per_iter=16, cost_model="random",
            builder=ms.builder.LocalBuilder(max_workers=1, timeout_sec=300, initializer=_skip_tensor_intrin),
            runner=ms.runner.LocalRunner(timeout_sec=60, initializer=_skip_tensor_intrin))
        with target, database:
            mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    seconds = time.time() - start
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    args = [tvm.runtime.tensor(v) for v in feeds.values()]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ours = relax.VirtualMachine(compile_module(import_onnx(model), host_target(), "splitc", print)[0], tvm.cpu())
    tuned, ort_ms = median_ms(lambda: vm["main"](*args), 200), median_ms(lambda: session.run(None, feeds), 200)
    splitc_ms = median_ms(lambda: ours["main"](*args), 200)
    return {"model": name, "trials": trials, "tuning_s": round(seconds, 1), "tuned_ms": round(tuned, 4),
            "splitc_ms": round(splitc_ms, 4), "ort_ms": round(ort_ms, 4), "tuned_over_ort": round(tuned / ort_ms, 2),
            "splitc_over_ort": round(splitc_ms / ort_ms, 2)}


def metaschedule(trials: int) -> dict:
    """``tune`` in a subprocess (a crash there must not take the benchmark down); its JSON result."""
    import subprocess

    done = subprocess.run([sys.executable, __file__, "--tune-only", "chain_cnn", "--metaschedule", str(trials)],
                          capture_output=True, text=True, env={**os.environ, "TVM_NUM_THREADS": "1"}, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"error": (done.stderr or done.stdout)[-2000:]}


def run_threads(threads: int, args, work: str) -> list[dict]:
    """``measure`` every model in a subprocess with a ``threads``-thread TVM pool (TVM sizes it once)."""
    import subprocess

    command = [sys.executable, __file__, "--threads-only", str(threads), "--work", work, "--repeat", str(args.repeat)]
    done = subprocess.run(command + (["--quick"] if args.quick else []), capture_output=True, text=True,
                          env={**os.environ, "TVM_NUM_THREADS": str(threads)})
    sys.stderr.write(done.stderr[-4000:] if done.returncode else "")
    print(done.stdout.rsplit("\n", 2)[0], flush=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--metaschedule", type=int, default=0, metavar="TRIALS")
    parser.add_argument("--tune-only", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--threads-only", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = QUICK if args.quick else MODELS
    if args.tune_only:
        print(json.dumps(tune(args.tune_only, args.metaschedule)))
        return
    if args.threads_only:
        rows = [row for name in names for row in measure(name, args.threads_only, args.repeat, Path(args.work))]
        print(json.dumps(rows))
        return
    counts = sorted({1, os.cpu_count() or 1})
    with tempfile.TemporaryDirectory() as work:
        rows = [row for threads in counts for row in run_threads(threads, args, work)]
    tuned = metaschedule(args.metaschedule) if args.metaschedule else None
    write(rows, tuned, counts, args)


NOTES = """## Notes

**Why TVM's default pipeline is slow.** For `llvm` targets `relax.get_default_pipeline` only legalizes
and fuses: every kernel stays a naive scalar loop nest (no vectorization, no parallel loop, no tiling).
The `splitc` pipeline (`splitc/backends/tvm/pipeline.py`) adds, without any tuning: convolutions in
NHWC/HWIO (vectors run along output channels, contiguous in both the output and the weights, whatever
the stride), batch norm decomposed and folded for inference, and one fixed schedule per fused kernel
(`schedule.py`): an 8-row x 1-2-vector register tile with the accumulator in registers, the element-wise
epilogue folded into the write-back, outer loops fused and parallel when the kernel is large enough,
prologues (padding) vectorized; dlight's CPU `Reduction` rule for softmax / layer norm. Building a half
takes about a second.

**MetaSchedule.** `tune_relax` crashed with `Segfault encountered` in `TuneContextInitialize`:

    !!!!!!! Segfault encountered !!!!!!!
      File "./signal/../sysdeps/unix/sysv/linux/x86_64/libc_sigaction.c", line 0, in 0x00007f908ba5a04f
      File "<unknown>", line 0, in tvm::ffi::ToJSONGraph(tvm::ffi::Any const&, tvm::ffi::Any const&)
      ... TuneContext.__init__ -> _ffi_api.TuneContextInitialize(self)

The mutators `MutateParallel` and `MutateComputeLocation` serialize the task's module with `SaveJSON`
when initialized, and with apache-tvm-ffi 0.1.15.x (which pip picks for apache-tvm 0.27.0.post1, whose
requirement is only `>=0.1.14.post0`) *any* `tvm.ir.save_json` of an IR node segfaults, e.g.
`tvm.ir.save_json(tvm.tirx.IntImm("int32", 3))`. With apache-tvm-ffi 0.1.14.post0/post1 it works;
`splitc[tvm]` pins `apache-tvm-ffi<0.1.15`. Then every candidate failed to build ("Build errors: 8
sample(s)"): `LocalBuilder` starts fresh worker processes for each batch and each imports
`tvm.s_tir.tensor_intrin`, which takes about 46 s on this machine (18 s of it the CUDA intrinsics),
past the 30 s build timeout. Skipping that import in the workers (float32 CPU kernels use no tensor
intrinsics; `--metaschedule` does so) makes tuning work; it also needs `psutil` and `cloudpickle`, and
`xgboost` for its default cost model (the run above uses the random one). With a small budget (above,
`splitc_ms` is the tuning-free build of the same model) tuning takes minutes per model and does not beat
the tuning-free schedules, so the backend does not tune.

**Threads.** TVM sizes its thread pool once per process from `TVM_NUM_THREADS`; unset, 0.27 takes
half the cores, pinned, which ran slower than one thread here. `splitc.runtime.tvm_half` sets it to
every core the process may use unless it is already set. This machine (2 cores) was shared with other
jobs while measuring, so the 2-thread rows are noisier than the 1-thread ones. Halves under ~0.05 ms are
dominated by per-call costs (the VM allocates its storage on every call, ~10 us); `control_flow`'s edge
half keeps NCHW because its `If` brings ops `ConvertLayout` is not trusted with.
"""


def write(rows: list[dict], tuned: dict | None, thread_counts: list[int], args) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpu": host_target().target["mcpu"],
            "cores": os.cpu_count(), "tvm": tvm_version(), "onnxruntime": ort.__version__, "repeat": args.repeat}
    (RESULTS / "tvm.json").write_text(json.dumps({"meta": meta, "rows": rows, "metaschedule": tuned}, indent=2) + "\n")
    lines = ["# TVM halves vs onnxruntime", "",
             f"Machine: {meta['cores']} cores, LLVM CPU `{meta['cpu']}`; TVM {meta['tvm']}, onnxruntime "
             f"{meta['onnxruntime']}; median of {args.repeat} calls. Written by `python bench/tvm.py`.", ""]
    for threads in thread_counts:
        lines += table(rows, threads)
    if tuned is not None:
        lines += ["### MetaSchedule (chain_cnn, whole model, 1 thread)", "", "```",
                  json.dumps(tuned, indent=2), "```", ""]
    (RESULTS / "tvm.md").write_text("\n".join(lines) + "\n" + NOTES)
    print(f"wrote {RESULTS / 'tvm.md'}")


if __name__ == "__main__":
    main()

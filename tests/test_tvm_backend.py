"""The TVM backend: host builds of both halves against onnxruntime, aarch64 builds, errors and fallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("tvm.relax.frontend.onnx", reason="apache-tvm is not installed (pip install 'splitc[tvm]')")

import splitc  # noqa: E402
from splitc.testing import zoo  # noqa: E402
from splitc.backends.output import write_directory  # noqa: E402
from splitc.backends.tvm import TVMTargetError, TVMWarning, UnsupportedOpsError, write_tvm_halves  # noqa: E402
from splitc.backends.tvm.targets import host_target  # noqa: E402
from splitc.runtime import Pipeline  # noqa: E402
from splitc.runtime.tvm_half import TvmHalf, TvmHalfError  # noqa: E402
from tests.conftest import random_feeds, run_model  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5
EM_AARCH64 = 183
CUTS = [("chain_cnn", ["stage2/pool"]), ("resnet_blocks", ["block2/relu"]), ("inception_blocks", ["inc1/concat"]),
        ("two_in_two_out", ["stage1/pool", "meta"]), ("control_flow", ["stage2/pool"]), ("chain_cnn", ["input"])]


def compile_split(model: onnx.ModelProto, cut: list[str] | None, target: str = "jetson-tx2"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return splitc.compile(model, target=target, cloud="t4", cut=cut, bits=32)


def save_host(split, out: Path, pipeline: str = "splitc") -> Path:
    """Both halves built for this machine's CPU (the edge targets are ARM)."""
    host = host_target()

    def fill(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TVMWarning)
            plan = write_tvm_halves(split, tmp, pipeline=pipeline, targets={"edge": host, "cloud": host})
        (tmp / "plan.json").write_text(json.dumps(plan))

    return write_directory(out, fill)


def assert_close(got: dict, expected: dict) -> None:
    assert set(expected) <= set(got)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Host builds of every case in CUTS, made once: name -> (model, split, output directory)."""
    cases = {}
    for name, cut in CUTS:
        model = zoo.build(name)
        split = compile_split(model, cut)
        cases[f"{name}:{','.join(cut)}"] = model, split, save_host(split, tmp_path_factory.mktemp(name) / "out")
    return cases


@pytest.mark.parametrize("case", [f"{name}:{','.join(cut)}" for name, cut in CUTS])
def test_host_halves_equal_onnxruntime_and_stitch_to_the_model(built, case):
    model, split, out = built[case]
    plan = json.loads((out / "plan.json").read_text())
    feeds = random_feeds(model)
    pipeline = Pipeline(out)
    for side, half in (("edge", split.edge_model), ("cloud", split.cloud_model)):
        entry = plan[side]
        assert entry["file"] == f"{side}.so" and entry["backend"] == "tvm"
        assert entry["tvm_pipeline"] == "splitc", "the splitc schedules fell back to TVM's default pipeline"
        half_feeds = feeds if side == "edge" else pipeline.run_edge(feeds)
        half_feeds = {i.name: half_feeds[i.name] for i in half.graph.input}
        runner = TvmHalf(out / entry["file"], entry)
        assert_close(dict(zip(runner.output_names, runner.run(None, half_feeds))), run_model(half, half_feeds))
    assert_close(pipeline.run(feeds), run_model(model, feeds))


def test_default_pipeline_builds_match_too(tmp_path):
    model = zoo.build("chain_cnn")
    out = save_host(compile_split(model, ["stage2/pool"]), tmp_path / "out", pipeline="default")
    assert json.loads((out / "plan.json").read_text())["edge"]["tvm_pipeline"] == "default"
    feeds = random_feeds(model)
    assert_close(Pipeline(out).run(feeds), run_model(model, feeds))


def test_tvm_half_takes_misaligned_strided_inputs_and_copies_passthrough_outputs(built):
    model, split, out = built["chain_cnn:input"]  # cloud-only: the edge half returns its input
    entry = json.loads((out / "plan.json").read_text())["edge"]
    half = TvmHalf(out / "edge.so", entry)
    x = random_feeds(model)["input"]
    raw = np.empty(x.size * 2 + 1, dtype=np.float32)
    strided = raw[1:1 + 2 * x.size:2].reshape(x.shape)  # misaligned and non-contiguous
    strided[...] = x
    (y,) = half.run(None, {"input": strided})
    np.testing.assert_array_equal(y, x)
    assert not np.may_share_memory(y, strided)


def elf_machine(path: Path) -> tuple[bytes, int, int]:
    header = path.read_bytes()[:20]
    return header[:4], header[4], int.from_bytes(header[18:20], "little")


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                    reason="aarch64-linux-gnu-g++ is not installed (make test-arm installs g++-aarch64-linux-gnu)")
@pytest.mark.parametrize("target, cpu", [("jetson-tx2", "cortex-a57"), ("raspberry-pi-4", "cortex-a72")])
def test_edge_half_is_an_aarch64_elf(tmp_path, target, cpu):
    split = compile_split(zoo.build("resnet_blocks"), ["block2/relu"], target=target)
    with pytest.warns(TVMWarning, match="cloud half"):
        out = split.save(tmp_path / "out", backend="tvm")
    assert sorted(p.name for p in out.iterdir()) == [".splitc-output.json", "cloud.so", "edge.so", "plan.json"]
    assert elf_machine(out / "edge.so") == (b"\x7fELF", 2, EM_AARCH64)  # 64-bit, machine AArch64
    plan = json.loads((out / "plan.json").read_text())
    import tvm

    assert plan["edge"]["tvm_target"] == {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": cpu,
                                          "mattr": ["+neon"]}
    assert plan["edge"]["tvm_version"] == plan["cloud"]["tvm_version"] == tvm.__version__
    assert plan["edge"]["tvm_arch"] == "aarch64" and plan["cloud"]["tvm_target"]["kind"] in ("llvm", "cuda")
    with pytest.raises(TvmHalfError, match="aarch64"):
        Pipeline(out)  # not runnable on this x86 machine: a clear error, not a dlopen failure


def rnn_model() -> onnx.ModelProto:
    """Relu -> LSTM -> Squeeze -> GRU -> Relu: two op types TVM's importer lacks."""
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes = [
        helper.make_node("Relu", ["x"], ["edge/relu"], name="edge/relu"),
        helper.make_node("LSTM", ["edge/relu", "lstm_w", "lstm_r"], ["lstm/y"], name="rnn/lstm", hidden_size=8),
        helper.make_node("Squeeze", ["lstm/y", "axes"], ["lstm/squeeze"], name="lstm/squeeze"),
        helper.make_node("GRU", ["lstm/squeeze", "gru_w", "gru_r"], ["gru/y"], name="rnn/gru", hidden_size=4),
        helper.make_node("Relu", ["gru/y"], ["y"], name="out/relu"),
    ]
    weights = [weight("lstm_w", 1, 32, 4), weight("lstm_r", 1, 32, 8), weight("gru_w", 1, 12, 8),
               weight("gru_r", 1, 12, 4), numpy_helper.from_array(np.array([1], np.int64), "axes")]
    graph = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 1, 1, 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def test_unsupported_ops_of_both_halves_in_one_error(tmp_path):
    split = compile_split(rnn_model(), ["lstm/squeeze"])
    with pytest.raises(UnsupportedOpsError) as caught:
        split.save(tmp_path / "out", backend="tvm")
    assert [n[:3] for n in caught.value.nodes] == [("edge", "LSTM", "rnn/lstm"), ("cloud", "GRU", "rnn/gru")]
    message = str(caught.value)
    assert "LSTM 'rnn/lstm'" in message and "GRU 'rnn/gru'" in message and "--tvm-fallback onnx" in message
    assert not (tmp_path / "out").exists()


def test_fallback_emits_the_affected_half_as_onnx(tmp_path):
    model = rnn_model()
    split = compile_split(model, ["edge/relu"])
    out = tmp_path / "out"

    def fill(tmp: Path) -> None:
        with pytest.warns(TVMWarning, match=r"cloud half is emitted as ONNX.*LSTM 'rnn/lstm'.*GRU 'rnn/gru'"):
            plan = write_tvm_halves(split, tmp, fallback="onnx", targets={"edge": host_target()})
        (tmp / "plan.json").write_text(json.dumps(plan))

    write_directory(out, fill)
    plan = json.loads((out / "plan.json").read_text())
    assert (plan["edge"]["file"], plan["cloud"]["file"]) == ("edge.so", "cloud.onnx")
    assert plan["cloud"]["backend"] == "onnx" and plan["cloud"]["tvm_fallback"] == ["LSTM rnn/lstm", "GRU rnn/gru"]
    feeds = random_feeds(model)
    assert_close(Pipeline(out).run(feeds), run_model(model, feeds))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc.cli", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})


def test_cli_lists_unsupported_ops_and_exits_2(tmp_path):
    onnx.save(rnn_model(), tmp_path / "rnn.onnx")
    result = cli(str(tmp_path / "rnn.onnx"), "--cut", "lstm/squeeze", "--bits", "32", "--backend", "tvm",
                 "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "LSTM 'rnn/lstm'" in result.stderr and "GRU 'rnn/gru'" in result.stderr
    assert "Traceback" not in result.stderr


def test_tegra_k1_is_a_clear_error(tmp_path):
    split = compile_split(zoo.build("chain_cnn"), ["stage2/pool"], target="tegra-k1")
    with pytest.raises(TVMTargetError, match="32-bit ARMv7"):
        split.save(tmp_path / "out", backend="tvm")


RUNTIME_ONLY = """
import sys, numpy as np
from splitc.runtime import Pipeline
out = Pipeline(sys.argv[1]).run({"input": np.load(sys.argv[2])})
np.save(sys.argv[3], out["probs"])
compiler = ("splitc.frontend", "splitc.ir", "splitc.passes", "splitc.backends", "splitc.cli", "splitc.api", "tvm.relax")
print(sorted(m for m in sys.modules if m.startswith(compiler)))
"""


def test_runtime_runs_so_halves_without_any_compiler(built, tmp_path):
    model, _, out = built["chain_cnn:stage2/pool"]
    feeds = random_feeds(model)
    np.save(tmp_path / "x.npy", feeds["input"])
    done = subprocess.run([sys.executable, "-c", RUNTIME_ONLY, str(out), str(tmp_path / "x.npy"),
                           str(tmp_path / "y.npy")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TVM_USE_RUNTIME_LIB": "1"}, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), run_model(model, feeds)["probs"], rtol=RTOL, atol=ATOL)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="no CUDA toolchain (nvcc) to build a cloud half for CUDA")
def test_cuda_cloud_half_builds(tmp_path):
    """Compile-only: running it needs a CUDA GPU (see cloud_target for when splitc picks CUDA)."""
    from splitc.backends.tvm.build import build_half
    from splitc.backends.tvm.targets import TvmTarget

    split = compile_split(zoo.build("resnet_blocks"), ["block2/relu"])
    target = TvmTarget("t4", {"kind": "cuda", "arch": "sm_75", "host": {"kind": "llvm"}}, device="cuda")
    entry = build_half(split.cloud_model, target, tmp_path / "cloud.so")
    assert entry["tvm_device"] == "cuda" and entry["tvm_pipeline"] == "default"
    assert elf_machine(tmp_path / "cloud.so")[0] == b"\x7fELF"


def test_scalar_inputs_and_outputs_keep_their_rank(tmp_path):
    """0-d tensors, like a quantized cut's min and max, cross TvmHalf as 0-d arrays."""
    from splitc.backends.tvm.build import build_half

    nodes = [helper.make_node("Mul", ["x", "s"], ["y"], name="scale"),
             helper.make_node("ReduceMax", ["x"], ["m"], name="max", keepdims=0)]
    graph = helper.make_graph(nodes, "scalars", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                                 helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                               helper.make_tensor_value_info("m", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    entry = build_half(model, host_target(), tmp_path / "half.so")
    entry.update(inputs=[{"name": "x"}, {"name": "s"}], outputs=[{"name": "y"}, {"name": "m"}])
    feeds = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(0.5, dtype=np.float32)}
    y, m = TvmHalf(tmp_path / "half.so", entry).run(None, feeds)
    assert m.shape == () and y.shape == (2, 3)
    assert_close({"y": y, "m": m}, run_model(model, feeds))

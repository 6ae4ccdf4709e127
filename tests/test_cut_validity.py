"""One definition of a valid cut: the optimiser, the candidate list and the forced cut agree.

* Every cut the optimiser or the candidate list returns is accepted as a
  forced cut and by the backend (both halves emitted and checked), and its
  predicted cost equals the cost re-priced from its assignment.
* Every assignment that brute force calls valid sends a set of tensors that
  ``forced_partition`` accepts, and the forced assignment sends exactly that
  set and contains the brute-force cloud side.
* Random DAGs, random costs, and random measured profiles (segment-aware pricing).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import splitc
from splitc.api import Analysis
from splitc.backends import onnx_backend as emit
from splitc.errors import CutError
from splitc.joint import candidate_cuts
from splitc.testing.baselines import random_dag_problem
from splitc.partition.solve import forced_partition, make_partition, partition
from splitc.partition.pricing import evaluate
from splitc.partition.problem import is_valid
from tests.test_latency_partition import valid_assignments, with_measurements


def _crossing(problem, on_cloud) -> set[str]:
    return {problem.value_names[v] for v in evaluate(problem, on_cloud).up_values}


def _named(problem):
    problem.node_names = [f"n{i}" for i in range(problem.num_nodes)]
    problem.value_names = [f"v{i}" for i in range(problem.num_values)]
    return problem


def _random_problem(seed: int, n: int, measured: bool):
    """A random DAG with random costs, and random measured prefix/suffix times when ``measured``."""
    rng = np.random.default_rng(seed)
    problem = _named(random_dag_problem(rng, n, rtt_ms=float(rng.choice([0.0, 3.0]))))
    return with_measurements(problem, rng) if measured else problem


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 11), measured=st.booleans())
def test_every_valid_assignment_is_a_forced_cut(seed, n, measured):
    problem = _random_problem(seed, n, measured)
    for on_cloud in valid_assignments(problem):
        sent = _crossing(problem, on_cloud)
        if not sent:
            continue
        forced = forced_partition(problem, sorted(sent))
        assert set(forced.cut_values) == sent
        assert is_valid(problem, forced.on_cloud)
        assert np.all(forced.on_cloud[on_cloud]), "the forced cloud side contains every valid one"


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 16), measured=st.booleans())
def test_optimiser_candidates_are_forced_cuts_priced_alike(seed, n, measured):
    problem = _random_problem(seed, n, measured)
    result = partition(problem)
    for part in [result.best, *result.candidates()]:
        assert is_valid(problem, part.on_cloud)
        assert make_partition(problem, part.on_cloud).total_ms == pytest.approx(part.total_ms, abs=1e-9)
        if part.cut_values:
            forced = forced_partition(problem, part.cut_values)
            assert set(forced.cut_values) == set(part.cut_values)


def test_invalid_cuts_are_refused_in_api_words():
    problem = _named(random_dag_problem(np.random.default_rng(3), 6))
    with pytest.raises(CutError, match="cut names 'nope'") as info:
        forced_partition(problem, ["nope"])
    assert "--cut" not in str(info.value)


# ---------------------------------------------------------------------- real ONNX graphs, the backend


def _random_onnx(rng: np.random.Generator, nodes: int) -> onnx.ModelProto:
    """A random DAG of elementwise ops over [1, 4] tensors; unread tensors become graph outputs."""
    inputs = [f"in{i}" for i in range(int(rng.integers(1, 3)))]
    tensors = list(inputs)
    read: set[str] = set()
    protos = []
    for i in range(nodes):
        k = int(rng.integers(1, min(3, len(tensors)) + 1))
        args = list(rng.choice(tensors, size=k, replace=False))
        op = {1: str(rng.choice(["Relu", "Sigmoid", "Neg", "Abs"])), 2: str(rng.choice(["Add", "Mul", "Sub"])),
              3: "Sum"}[k]
        out = f"t{i}"
        protos.append(helper.make_node(op, args, [out], name=f"node{i}"))
        read.update(args)
        tensors.append(out)
    for name in inputs:
        if name not in read:  # every input is read
            protos.append(helper.make_node("Relu", [name], [f"{name}_r"], name=f"read_{name}"))
            tensors.append(f"{name}_r")
            read.add(name)
    outputs = [t for t in tensors if t not in read]
    f = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4])  # noqa: E731
    graph = helper.make_graph(protos, "random", [f(n) for n in inputs], [f(n) for n in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _with_random_costs(analysis: Analysis, rng: np.random.Generator, measured: bool) -> Analysis:
    problem = analysis.problem
    problem.edge_ms = rng.integers(0, 20, problem.num_nodes).astype(float)
    problem.cloud_ms = rng.integers(0, 4, problem.num_nodes).astype(float)
    problem.nbytes = rng.integers(1, 60, problem.num_values)
    problem.bandwidth = float(rng.choice([1e3, 1e4, 1e6]))
    if measured:
        problem = with_measurements(problem, rng)
    return Analysis(analysis.graph, analysis.costs, problem, partition(problem), analysis.models)


@pytest.mark.parametrize("seed", range(25))
def test_candidates_are_accepted_by_the_backend(seed):
    rng = np.random.default_rng(1000 + seed)
    model = _random_onnx(rng, int(rng.integers(2, 9)))
    analysis = _with_random_costs(splitc.analyse(model), rng, measured=bool(seed % 2))
    feeds = {i.name: rng.standard_normal((1, 4)).astype(np.float32) for i in model.graph.input}
    want = _run(model, feeds)
    for cut in candidate_cuts(analysis):
        part = analysis.partition_for(cut)
        assert set(part.cut_values) == set(cut)
        split = analysis.split(list(cut))
        assert split.plan["predicted"]["total_ms"] == pytest.approx(
            make_partition(analysis.problem, part.on_cloud).total_ms, abs=1e-9)
        for half in (split.edge_model, split.cloud_model):
            if half is not None:
                emit.check_half(half)
        got = _stitched(split, feeds)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=1e-6)


def _run(model, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def _stitched(split, feeds):
    edge_out = _run(split.edge_model, {i.name: feeds[i.name] for i in split.edge_model.graph.input})
    result = dict(edge_out)
    if split.cloud_model is not None:
        avail = {**feeds, **edge_out}
        result.update(_run(split.cloud_model, {i.name: avail[i.name] for i in split.cloud_model.graph.input}))
    return result


def test_a_tensor_computed_from_another_sent_tensor():
    """ids and e = Gather(emb, ids) may both be sent when the cloud needs both (a mask from ids)."""
    emb = helper.make_tensor("emb", TensorProto.FLOAT, [10, 4], np.arange(40, dtype=np.float32).tolist())
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("Unsqueeze", ["idsf", "axes"], ["mask"], name="mask"),
        helper.make_node("Mul", ["e", "mask"], ["y"], name="apply"),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [2])
    graph = helper.make_graph(nodes, "tok", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4])],
                              initializer=[emb, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    split = splitc.analyse(model).split(["e", "ids"])
    assert sorted(c["tensor"] for c in split.plan["cut"]) == ["e", "ids"]
    feeds = {"ids": np.array([[1, 2, 3, 0, 9]], np.int64)}
    np.testing.assert_array_equal(_stitched(split, feeds)["y"], _run(model, feeds)["y"])


# ---------------------------------------------------------------------- one probe per compile


def test_the_calibration_set_is_probed_once_per_compile(monkeypatch, tmp_path):
    """A compile runs the model over the calibration set once (sizes, drops and codebooks share it), and
    a bandwidth range of several plans does too; the calibration file is read once."""
    from splitc import adaptive
    from splitc.calibration import calibrate
    from tests.stitching import CALIB, DIGITS, DIGITS_MID

    runs, loads = [], []
    real_probe, real_load = calibrate.run_probe, calibrate.load
    monkeypatch.setattr(calibrate, "run_probe", lambda *a, **k: runs.append(1) or real_probe(*a, **k))
    monkeypatch.setattr(calibrate, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    split = splitc.compile(DIGITS, target="raspberry-pi-4", bandwidth="1Mbps", calib=CALIB, max_drop=0.02,
                           cut=[DIGITS_MID])
    assert split.plan["cut"][0]["codec"].get("codebook"), "a quantized cut: its codebook was trained too"
    assert len(runs) == 1 and len(loads) == 1, (runs, loads)
    runs.clear(), loads.clear()
    ranged = adaptive.compile_range(DIGITS, "300KBps..10GBps", target="tegra-k1", cloud="h100", rtt="0.01ms",
                                    calib=CALIB, max_drop=0.02)
    assert len(ranged.splits) >= 2
    assert len(runs) == 1 and len(loads) == 1, (runs, loads)

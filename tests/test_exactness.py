"""Edge half then cloud half must compute exactly what the original model does.

For every model, the cut is forced at each cut vertex and at the optimum.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import splitc
from splitc.testing import zoo
from tests.conftest import LIGHT_MODELS, light_ids, random_feeds, run_model

RTOL, ATOL = 1e-5, 1e-6


def stitched(split: splitc.CompiledSplit, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the halves as an app would: edge on the inputs, cloud on the cut tensors."""
    at_edge = run_model(split.edge_model, feeds)
    cut = {name: at_edge[name] for name in split.partition.cut_values}
    at_cloud = run_model(split.cloud_model, cut) if split.cloud_model is not None else {}
    merged = {**at_edge, **at_cloud}
    return {v.name: merged[v.name] for v in split.graph.outputs}


def check_all_cuts(model: onnx.ModelProto | str, analysis: splitc.Analysis) -> int:
    proto = onnx.load(model) if isinstance(model, str) else model
    feeds = random_feeds(proto)
    expected = run_model(proto, feeds)
    sendable = [t for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers]
    candidates = [c.cut_values for c in analysis.result.candidates() if c.cut_values]
    cuts = [None, []]
    for cut in [*[[t] for t in sendable], *candidates]:
        if sorted(cut) not in [sorted(c) for c in cuts[1:]]:
            cuts.append(cut)
    for cut in cuts:
        split = analysis.split(cut)
        got = stitched(split, feeds)
        assert list(got) == list(expected)
        for name in expected:
            np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=f"cut={cut} {name}")
        if cut:
            assert sorted(split.partition.cut_values) == sorted(cut)
    return len(cuts)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_model_every_cut(name: str) -> None:
    model = zoo.build(name)
    analysis = splitc.analyse(model, target="raspberry-pi-4", bandwidth="100Mbps")
    sendable = [t for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers]
    checked = check_all_cuts(model, analysis)
    assert checked >= len(sendable) + 2


def test_multi_tensor_cut_two_inputs_two_outputs() -> None:
    """No single tensor separates this model: cut the image trunk and the second input together."""
    model = zoo.build("two_in_two_out")
    analysis = splitc.analyse(model, target="raspberry-pi-4", bandwidth="100Mbps")
    assert analysis.result.cut_vertices == []
    trunk = next(n for n in analysis.graph.data_nodes if n.op_type == "Relu").outputs[0].name
    split = analysis.split([trunk, "meta"])
    assert sorted(split.partition.cut_values) == sorted([trunk, "meta"])
    feeds = random_feeds(model)
    expected = run_model(model, feeds)
    got = stitched(split, feeds)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=light_ids())
def test_light_model_every_cut(path) -> None:
    analysis = splitc.analyse(path, target="raspberry-pi-4", bandwidth="100Mbps")
    checked = check_all_cuts(str(path), analysis)
    final = [t for t in analysis.result.cut_vertices if not analysis.graph.values[t].consumers]
    assert checked >= len(analysis.result.cut_vertices) - len(final) + 2

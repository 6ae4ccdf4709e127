"""Quantized cuts: Q/DQ insertion, the codec ops, calibration, joint (cut, bits) selection, accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx.reference import ReferenceEvaluator

import splitc
from splitc.testing import zoo
from splitc.backends.stitched import HUFFMAN_OPS, stitched_model
from splitc.joint import EncodingOptions, choose
from splitc.passes import qdq
from splitc.wire import codec
from splitc.cost.model import RooflineCostModel
from splitc.partition.select import Option, select, solve_ilp
from splitc.runtime import Pipeline
from splitc.targets import Target
from tests.conftest import random_feeds, run_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"
DIGITS = EXAMPLES / "digits_cnn.onnx"
CALIB = EXAMPLES / "calib.npz"
TEST = EXAMPLES / "test.npz"
MID = "/features/features.2/Relu_output_0"
# A slow microcontroller-class device: on it, sending the digits model's work to the cloud pays.
MCU = RooflineCostModel(Target("mcu", "edge", "slow microcontroller", 2e8, 1e8, 0.5, 50.0, "tests"))


@pytest.fixture(scope="module")
def resnet_split():
    model = zoo.build("resnet_blocks")
    return model, splitc.analyse(model).split(["block2/relu"])


def _quantized_halves(split, enc: qdq.Encoding):
    edge, cloud = onnx.ModelProto(), onnx.ModelProto()
    edge.CopyFrom(split.edge_model)
    cloud.CopyFrom(split.cloud_model)
    qdq.insert_quantize(edge, [enc])
    qdq.insert_dequantize(cloud, [enc])
    return edge, cloud


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("axis", [None, 1])
def test_onnx_quantizer_equals_simulation_bit_for_bit(resnet_split, bits: int, axis) -> None:
    model, split = resnet_split
    enc = qdq.Encoding("block2/relu", bits, axis, "huffman")
    edge, cloud = _quantized_halves(split, enc)
    onnx.checker.check_model(edge, full_check=True)
    onnx.checker.check_model(cloud, full_check=True)
    feeds = random_feeds(model, seed=bits)
    raw = run_model(split.edge_model, feeds)["block2/relu"]
    wire = run_model(edge, feeds)
    q, lo, hi = qdq.simulate(raw, enc)
    np.testing.assert_array_equal(wire["block2/relu.q"], q)
    np.testing.assert_array_equal(wire["block2/relu.min"], lo)
    np.testing.assert_array_equal(wire["block2/relu.max"], hi)
    assert wire["block2/relu.q"].dtype == np.uint8 and int(q.max()) <= (1 << bits) - 1
    rebuilt = run_model(cloud, {n: wire[n] for n in enc.wire_names()})
    expected = run_model(split.cloud_model, {"block2/relu": qdq.round_trip(raw, enc)})
    np.testing.assert_array_equal(rebuilt["logits"], expected["logits"])


def test_constant_tensor_does_not_divide_by_zero(resnet_split) -> None:
    _, split = resnet_split
    enc = qdq.Encoding("block2/relu", 4)
    x = np.full((1, 32, 16, 16), 3.25, np.float32)
    q, lo, hi = qdq.simulate(x, enc)
    assert not q.any() and lo == hi == np.float32(3.25)
    np.testing.assert_array_equal(qdq.round_trip(x, enc), x)


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6),
               elements=st.floats(-1e4, 1e4, width=32)),
    st.integers(1, 8),
    st.booleans(),
)
def test_quantization_error_is_at_most_half_a_step(x: np.ndarray, bits: int, per_channel: bool) -> None:
    enc = qdq.Encoding("t", bits, 1 if per_channel else None)
    back = qdq.round_trip(x, enc)
    axes = None if not per_channel else tuple(i for i in range(x.ndim) if i != 1)
    span = (x.max(axis=axes, keepdims=per_channel).astype(np.float64)
            - x.min(axis=axes, keepdims=per_channel).astype(np.float64))
    step = span / ((1 << bits) - 1)
    slack = 1e-5 * (np.abs(x).max() + 1)  # float32 rounding in the quantizer and dequantizer
    assert np.all(np.abs(back.astype(np.float64) - x) <= step / 2 + slack)


def _book(books: dict[str, bytes]):
    return codec.Codebook.from_bytes(next(iter(books.values()))) if books else None


def test_reference_evaluator_stitched_graph_equals_runtime_codec(tmp_path: Path) -> None:
    analysis = splitc.analyse(DIGITS)
    for per_channel in (False, True):
        choice = choose(analysis, EncodingOptions(4, "huffman", 0.01, CALIB, per_channel=per_channel), [MID])
        split = analysis.split(choice=choice)
        out = split.save(tmp_path / f"out{per_channel}")
        books = {c["tensor"]: (out / c["codec"]["codebook"]).read_bytes() for c in split.plan["cut"]}
        stitched = stitched_model(split.edge_model, split.cloud_model, split.plan, books)
        assert {n.op_type for n in stitched.graph.node if n.domain == "ai.splitc"} == {"HuffmanEncode", "HuffmanDecode"}
        evaluator = ReferenceEvaluator(stitched, new_ops=HUFFMAN_OPS)
        pipeline = Pipeline(out)
        for x in np.load(TEST)["image"][:5]:
            names = [o.name for o in stitched.graph.output]
            reference = dict(zip(names, evaluator.run(None, {"image": x[None]})))
            runtime = pipeline.run({"image": x[None]})
            # onnx's numpy reference and onnxruntime compute the edge half in different operation orders (and
            # FMA): ranges may differ in the last ulp and a value on a boundary may round to the next level.
            ref_q, ref_meta = codec.decode(reference[f"{MID}.frame"].tobytes(), codebook=_book(books))
            run_q, run_meta = codec.decode(pipeline.last_frames[0], codebook=_book(books))
            assert ref_meta.shape == run_meta.shape and ref_meta.bits == run_meta.bits
            np.testing.assert_allclose(ref_meta.lo, run_meta.lo, rtol=1e-6)
            np.testing.assert_allclose(ref_meta.hi, run_meta.hi, rtol=1e-6)
            diff = np.abs(np.asarray(ref_q, np.int16) - np.asarray(run_q, np.int16))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01
            same_ranges = np.array_equal(ref_meta.lo, run_meta.lo) and np.array_equal(ref_meta.hi, run_meta.hi)
            if not diff.any() and same_ranges:  # the same symbols and ranges make the same bytes
                assert reference[f"{MID}.frame"].tobytes() == pipeline.last_frames[0]
            np.testing.assert_allclose(reference["logits"], runtime["logits"], rtol=1e-4, atol=1e-5)


def _random_options(rng: np.random.Generator) -> list[Option]:
    options = [Option((), 32, float(rng.uniform(1, 50)), 0.0, 0.0, 0.0, 0.0, "edge-only")]
    for i in range(int(rng.integers(1, 6))):
        edge, cloud = rng.uniform(0, 20), rng.uniform(0, 5)
        for bits in (1, 2, 4, 8, 16, 32):
            size = rng.uniform(10, 1e5) * bits / 8
            drop = 0.0 if bits >= 16 else float(rng.uniform(0, 0.05) / bits)
            options.append(Option((f"t{i}",), bits, edge, cloud, size, rng.uniform(0, 100), drop))
    return options


@pytest.mark.parametrize("seed", range(40))
def test_selection_equals_pulp_ilp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    options = _random_options(rng)
    bandwidth, rtt, bound = rng.uniform(1e4, 1e7), rng.uniform(0, 50), rng.choice([0.0, 0.005, 0.01, 0.05])
    best = select(options, bandwidth, rtt, bound)
    ilp = solve_ilp(options, bandwidth, rtt, bound)
    assert ilp.total_ms(bandwidth, rtt) == pytest.approx(best.total_ms(bandwidth, rtt), rel=1e-9)
    assert best.drop <= bound + 1e-12


def _held_out_drop(split, out: Path) -> float:
    data = np.load(TEST)
    pipeline = Pipeline(out)
    float_ok = split_ok = 0
    for x, label in zip(data["image"], data["labels"]):
        float_ok += run_model(split.graph.model, {"image": x[None]})["logits"].argmax() == label
        split_ok += pipeline.run({"image": x[None]})["logits"].argmax() == label
    return (float_ok - split_ok) / len(data["labels"])


@pytest.mark.parametrize("cut", [None, [MID]], ids=["optimal", "forced-mid"])
def test_digits_accuracy_bound_holds_on_held_out_split(tmp_path: Path, cut) -> None:
    split = splitc.compile(DIGITS, target=MCU, bandwidth="1Mbps", rtt="5ms", bits="auto", calib=CALIB,
                           max_drop=0.01, cut=cut)
    assert split.plan["kind"] != "edge-only"
    assert split.plan["forced"] is (cut is not None)
    (entry,) = split.plan["cut"]
    assert entry["bits"] <= 8 and entry["codec"]["name"] == "huffman"
    assert split.plan["selection"]["accuracy_checked"] is True
    out = split.save(tmp_path / "out")
    measured = _held_out_drop(split, out)
    assert measured <= 0.01
    assert abs(entry["predicted_drop"] - measured) <= 0.01


def test_without_calibration_auto_uses_8_bits_and_warns() -> None:
    with pytest.warns(UserWarning, match="accuracy bound was NOT checked"):
        split = splitc.compile(DIGITS, target=MCU, bandwidth="1Mbps", bits="auto", cut=[MID])
    assert split.plan["cut"][0]["bits"] == 8
    assert split.plan["selection"]["accuracy_checked"] is False


def test_calibration_table_is_cached_next_to_the_output(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    first = splitc.compile(DIGITS, target=MCU, bandwidth="1Mbps", calib=CALIB)
    first.save(out)
    table = json.loads((out / "calibration.json").read_text())
    assert table["metric"] == "top1" and table["entries"]

    from splitc.calibration import calibrate

    def refuse(*args, **kwargs):
        raise AssertionError("the cached table should have been used")

    monkeypatch.setattr(calibrate, "measure", refuse)
    second = splitc.compile(DIGITS, target=MCU, bandwidth="300KBps", calib=CALIB, cache_dir=out)
    assert second.plan["selection"]["float_score"] == first.plan["selection"]["float_score"]


def test_fixed_bits_and_raw_widths(tmp_path: Path) -> None:
    analysis = splitc.analyse(DIGITS, target=MCU, bandwidth="1Mbps")
    x = np.load(EXAMPLES / "sample.npy")
    expected = run_model(analysis.graph.model, {"image": x})["logits"]
    for bits, tolerance in ((32, 0.0), (16, 1e-2)):
        choice = choose(analysis, EncodingOptions(bits, "huffman", 0.01, CALIB), [MID])
        split = analysis.split(choice=choice)
        out = split.save(tmp_path / f"b{bits}")
        got = Pipeline(out).run({"image": x})["logits"]
        np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance + 1e-6)
        assert split.plan["cut"][0]["bits"] == bits


def test_calibration_from_an_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    from splitc.calibration.calibrate import load

    data = np.load(TEST)
    for i, (x, label) in enumerate(zip(data["image"][:12], data["labels"][:12])):
        (tmp_path / str(label)).mkdir(exist_ok=True)
        Image.fromarray(np.round(x[0] * 255).astype(np.uint8)).save(tmp_path / str(label) / f"{i:02d}.png")
    spec = [{"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    calib = load(tmp_path, spec, "mean=0.5,std=0.25")
    assert len(calib.samples) == 12
    files = sorted(p for p in tmp_path.rglob("*.png"))
    for sample, path, label in zip(calib.samples, files, calib.labels):
        index = int(path.stem)
        expected = (np.round(data["image"][index] * 255) / 255 - 0.5) / 0.25
        np.testing.assert_allclose(sample["image"][0], expected, atol=1e-6)
        assert label == data["labels"][index]
    split = splitc.compile(DIGITS, target=MCU, bandwidth="1Mbps", calib=tmp_path, preprocess="scale=255")
    assert split.plan["selection"]["accuracy_checked"]


def test_cli_quantization_flags(tmp_path: Path) -> None:
    from tests.test_cli import splitc_cli

    out = tmp_path / "out"
    result = splitc_cli(str(DIGITS), "--target", "raspberry-pi-4", "--cut", MID, "--bits", "auto", "--calib",
                        str(CALIB), "--max-drop", "1%", "--metric", "top1", "--per-channel", "--codec", "huffman",
                        "--json", "-o", str(out))
    assert result.returncode == 0, result.stderr
    plan = json.loads((out / "plan.json").read_text())
    (entry,) = plan["cut"]
    assert entry["axis"] == 1 and entry["bits"] <= 8 and entry["codec"]["name"] == "huffman"
    assert plan["selection"]["max_drop"] == pytest.approx(0.01)
    assert 0 < plan["selection"]["chosen"]["drop_bound"] <= 0.01
    assert (out / entry["codec"]["codebook"]).is_file() and (out / "calibration.json").is_file()
    ran = splitc_cli("run", str(out), "--input", str(EXAMPLES / "sample.npy"), "--local")
    assert ran.returncode == 0, ran.stderr
    for args, message in [(["--bits", "12"], "--bits must be auto, 1..8, 16 or 32"),
                          (["--max-drop", "lots"], "bad fraction 'lots'"),
                          (["--codec", "zip"], "--codec must be huffman or none"),
                          (["--metric", "f1", "--calib", str(CALIB)], "unknown --metric 'f1'"),
                          (["--calib", str(tmp_path / "nope.npz")], "no such file"),
                          (["--calib", str(TEST.parent / "sample.npy")], "not a readable .npz")]:
        bad = splitc_cli(str(DIGITS), *args, "-o", str(tmp_path / "bad"))
        assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
        assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
    warned = splitc_cli(str(DIGITS), "--cut", MID, "--json", "-o", str(tmp_path / "w"))
    assert warned.returncode == 0 and "accuracy bound was NOT checked" in warned.stderr


def test_codec_none_packs_the_same_symbols(tmp_path: Path) -> None:
    """--codec none sends bit-packed symbols: same outputs as Huffman, a bigger frame."""
    from splitc.wire import codec

    analysis = splitc.analyse(DIGITS)
    x = np.load(EXAMPLES / "sample.npy")
    results = {}
    for name in ("none", "huffman"):
        split = analysis.split(choice=choose(analysis, EncodingOptions(4, name, 0.01, CALIB), [MID]))
        pipeline = Pipeline(split.save(tmp_path / name))
        results[name] = (pipeline.run({"image": x})["logits"], pipeline.last_frames[0])
    np.testing.assert_array_equal(results["none"][0], results["huffman"][0])
    assert codec.decode(results["none"][1])[1].mode == "packed"
    assert len(results["none"][1]) == 20 + 4 * 4 + 8 + 4 + 16 * 8 * 8 * 4 // 8
    assert len(results["huffman"][1]) < len(results["none"][1])


def test_pruned_calibration_picks_what_full_calibration_picks() -> None:
    """Widths skipped as dominated never change the choice: same option as measuring every width."""
    from splitc import joint
    from splitc.calibration import calibrate
    from splitc.partition.select import rank

    from splitc.partition import prune as prune_cuts
    from splitc.passes.qdq import width_order

    analysis = splitc.analyse(DIGITS, target=MCU, cloud="t4", bandwidth="1MBps", rtt="1ms")
    options = EncodingOptions("auto", "huffman", 0.01, CALIB)
    cuts = joint.candidate_cuts(analysis)
    link = (3e3, 3e7)
    pruned, table = joint.measured_options(analysis, options, cuts, bandwidths=link)
    skipped = [e for e in table.entries.values() if "dominated_by" in e]
    assert skipped, "the bound passes at a narrow width on some cut, so wider ones are skipped"
    assert any(e.get("pruned") for e in table.entries.values()), "some cut is slower than edge-only everywhere"
    assert any(e.get("above_feasible") for e in table.entries.values()), "options found feasible skip later ones"
    for key, entry in table.entries.items():
        if "dominated_by" in entry:
            (cut, bits), best = json.loads(key), entry["dominated_by"]
            beaten_by = table.entries[calibrate.Table.entry_key(cut, best)]
            assert width_order(best) < width_order(bits) and entry["bytes"] >= beaten_by["bytes"]

    real_measure = calibrate.measure

    def measure_everything(*args, **kwargs):
        for shortcut in ("passes", "worth", "on_feasible"):
            kwargs.pop(shortcut, None)
        return real_measure(*args, **kwargs)

    real_prune = prune_cuts.prune
    calibrate.measure, prune_cuts.prune = measure_everything, lambda _a, cuts, *_r, **_k: cuts
    try:
        full, full_table = joint.measured_options(analysis, options, cuts, bandwidths=link)
    finally:
        calibrate.measure, prune_cuts.prune = real_measure, real_prune
    assert all(e["drop"] is not None for e in full_table.entries.values())
    unmeasured = len(table.entries) - sum(e["drop"] is not None for e in table.entries.values())
    assert len(full) == len(pruned) + unmeasured
    for key, entry in table.entries.items():
        if entry["bytes"] is None:  # a cut skipped whole
            continue
        assert entry["bytes"] == full_table.entries[key]["bytes"]
        if entry["drop"] is not None:
            assert entry["drop"] == full_table.entries[key]["drop"]
    picks = set()
    for bandwidth in (3e3, 3e4, 3e5, 3e6, 3e7):
        best_pruned = rank(pruned, bandwidth, 1.0, 0.01)[0]
        best_full = rank(full, bandwidth, 1.0, 0.01)[0]
        assert (best_pruned.cut, best_pruned.width) == (best_full.cut, best_full.width)
        picks.add((best_full.cut, best_full.width))
    assert len(picks) > 1, "the range spans more than one optimal plan"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 50)), min_size=1, max_size=12),
       st.tuples(st.floats(0, 100), st.floats(0, 50)), st.floats(0.01, 1.0), st.floats(1.0, 10.0))
def test_cut_pruning_is_exact_against_a_dense_scan(upper, line, x_lo, width) -> None:
    """A pruned line is above the known-feasible envelope everywhere; a kept one touches it somewhere."""
    from splitc.partition.prune import envelope_at, witness

    x_range = (x_lo, x_lo * width)
    points, env = envelope_at(upper, x_range)
    found = witness(line, points, env)
    a, b = line
    if found is None:
        for x in np.linspace(*x_range, 2001):
            assert a + b * x > min(p + q * x for p, q in upper) * (1 - 1e-9)
    else:
        assert x_range[0] <= found <= x_range[1]
        assert a + b * found <= min(p + q * found for p, q in upper) * (1 + 1e-9) + 1e-12


def test_the_feasible_envelope_tightens_as_options_pass() -> None:
    """After ``add``, a (cut, bytes) is rejected exactly when it is slower than every known option everywhere."""
    from splitc import joint
    from splitc.partition.prune import FeasibleEnvelope, times

    analysis = splitc.analyse(DIGITS, target=MCU, cloud="t4", bandwidth="1MBps", rtt="1ms")
    cuts = [c for c in joint.candidate_cuts(analysis) if c]
    link = (3e3, 3e7)
    known = FeasibleEnvelope(analysis, cuts, link)
    xs = np.linspace(1e3 / link[1], 1e3 / link[0], 4001)

    def envelope(lines):
        return np.min([a + b * xs for a, b in lines], axis=0)

    before = envelope(known.lines)
    known.add(cuts[0], 10.0)  # a tiny frame for the input: much better than everything known
    after = envelope(known.lines)
    assert np.all(after <= before) and np.any(after < before)
    flipped = 0
    for cut in cuts:
        a, down = times(analysis, cut)
        for size in (0.0, 10.0, 100.0, 1e3, 1e4):
            line = a + (down + size) * xs
            assert known.worth(cut, size) == bool(np.any(line <= after * (1 + 1e-9))), (cut, size)
            flipped += np.any(line <= before * (1 + 1e-9)) and not known.worth(cut, size)
    assert flipped, "some option worth measuring before the add is not after it"

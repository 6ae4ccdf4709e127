"""Shape resolution: a chain of methods, with a record of which one resolved each tensor.

With every model input fixed, every intermediate shape is knowable, but
exporters write patterns that ONNX's own inference gives up on
(``Shape → Gather → Unsqueeze → Concat → Reshape``, ``Range``, ``Resize`` to
sizes computed from ``Shape``). The chain is:

1. ``onnx``: ONNX shape inference with data propagation.
2. ``symbolic``: onnxruntime's symbolic shape inference, for what is still
   unknown. A dimension it can only name by a fresh symbol depends on the
   input *values*, not on the (fixed) input shapes: the tensor is
   *data-dependent*.
3. ``execution``: the model is run once in onnxruntime on synthetic inputs,
   with every still-unknown tensor added as a graph output, and the real
   shapes are read. The inputs are filled twice (two different draws); a
   shape that differs between the two runs is data-dependent too.

Data-dependent tensors (outputs of ``NonZero``, ``NonMaxSuppression``,
``Unique``, ``Compress``, ``Loop``, ``TopK`` with a computed ``k``, ``Resize``
to sizes read from data, and what follows them) get the shape of the first
execution run; costs downstream use it, and they never cross the network.

Integer inputs are filled with zeros when they index a ``Gather`` (the
smallest valid index), with the sequence length when they are an RNN's
``sequence_lens``, else with ones; the fill is recorded in the report.
"""

# Over 400 lines on purpose: the three steps of one shape-resolution chain share its report, its
# region extraction and its fall-backs; apart, each would need the others' internals.

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from splitc.ir.proto import larger_than
from onnx import helper

from splitc.errors import ShapeError
from splitc.frontend import shapes as _shapes
from splitc.frontend.build import subgraph_captures
from splitc.frontend.shapes import infer_shapes, real_inputs, skeleton

METHODS = ("onnx", "symbolic", "execution")
DATA_DEPENDENT_OPS = {"NonZero", "NonMaxSuppression", "Unique", "Compress", "Loop", "Scan", "If"}
_INDEX_OPS = {"Gather": 1, "GatherElements": 1, "GatherND": 1, "ScatterElements": 1, "ScatterND": 1,
              "OneHot": 0, "Embedding": 0}
_RNN_OPS = {"LSTM", "GRU", "RNN"}


@dataclass
class ShapeReport:
    """Which method resolved each data tensor's shape, and what is data-dependent."""

    methods: dict[str, str] = field(default_factory=dict)  # tensor -> onnx | symbolic | execution
    data_dependent: dict[str, str] = field(default_factory=dict)  # tensor -> why
    synthetic_inputs: dict[str, str] = field(default_factory=dict)  # input -> fill used (when executed)
    seconds: dict[str, float] = field(default_factory=dict)  # method -> wall time
    tried: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {m: sum(1 for v in self.methods.values() if v == m) for m in METHODS if m in self.tried}

    def to_json(self) -> dict:
        """The plan's ``shapes`` entry: counts per method, non-onnx tensors by name, data-dependent ones."""
        return {
            "methods": self.counts(),
            "resolved": {t: m for t, m in self.methods.items() if m != "onnx"},
            "data_dependent": dict(self.data_dependent),
            "synthetic_inputs": dict(self.synthetic_inputs),
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def resolve_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ShapeReport]:
    """Shape-infer ``model`` (inputs fixed) by the chain above; returns the model with static value_info."""
    report = ShapeReport(tried=["onnx"])
    start = time.perf_counter()
    inferred = infer_shapes(model)
    report.seconds["onnx"] = time.perf_counter() - start
    data = _data_tensors(model)
    known = _known_types(inferred)
    unknown = [t for t in data if not _static(known.get(t))]
    for t in data:
        if t not in unknown:
            report.methods[t] = "onnx"
    if not unknown:
        return inferred, report
    producers = _producers(model)
    symbols: dict[str, str] = {}
    resolved: dict[str, tuple[tuple[int, ...], int]] = {}
    report.tried.append("symbolic")
    start = time.perf_counter()
    region = _region(model, unknown, known)
    sym_types, sym_error = _symbolic(region) if region is not None else ({}, None)
    if region is None or any(t not in sym_types or sym_types[t][2] is not None for t in unknown):
        # the whole model when the region is not enough, and to confirm that a shape depends on data
        sym_types, sym_error = _symbolic(model)
    report.seconds["symbolic"] = time.perf_counter() - start
    for t in unknown:
        shape, elem, symbol = sym_types.get(t, (None, 0, None))
        if symbol is not None:
            symbols[t] = symbol
        elif shape is not None and elem:
            resolved[t] = (shape, elem)
            report.methods[t] = "symbolic"
    need = [t for t in unknown if t not in resolved]
    if need:
        report.tried.append("execution")
        start = time.perf_counter()
        runs, run_error = _execute(model, need, report)
        report.seconds["execution"] = time.perf_counter() - start
        first, second = runs if runs else ({}, {})
        for t in need:
            if t not in first:
                continue
            value = first[t]
            resolved[t] = (tuple(int(d) for d in value.shape), helper.np_dtype_to_tensor_dtype(value.dtype))
            report.methods[t] = "execution"
            if t in second and second[t].shape != value.shape:
                report.data_dependent[t] = f"its shape changed between two synthetic inputs " \
                                           f"({_dims(value.shape)} and {_dims(second[t].shape)})"
        missing = [t for t in need if t not in resolved]
        if missing:
            _fail(missing[0], producers, report, sym_error, run_error)
    _mark_data_dependent(model, unknown, symbols, producers, report)
    return _with_types(inferred, resolved), report


# ----------------------------------------------------------------------------- the graph


def _data_tensors(model: onnx.ModelProto) -> list[str]:
    """Main-graph tensors computed from a graph input (the ones that need a static shape), in order."""
    data = {i.name for i in real_inputs(model)}
    read = {name for node in model.graph.node for name in [*node.input, *subgraph_captures(node)] if name}
    read |= {o.name for o in model.graph.output}
    order = []
    for node in model.graph.node:
        if node.op_type.startswith("Random") or any(n in data for n in [*node.input, *subgraph_captures(node)]):
            for out in node.output:
                if out:
                    data.add(out)
                    if out in read:
                        order.append(out)
    return order


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output if out}


def _known_types(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...] | None, int]]:
    table = {}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        if info.type.HasField("tensor_type"):
            shape, elem, _ = _read_type(info)
            old = table.get(info.name, (None, 0))
            table[info.name] = (shape if shape is not None else old[0], elem or old[1])
    return table


def _read_type(info: onnx.ValueInfoProto) -> tuple[tuple[int, ...] | None, int, str | None]:
    """(static shape or None, elem type, the first symbolic dim name if any)."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None, tensor.elem_type, None
    dims, symbol = [], None
    for d in tensor.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(d.dim_value)
        else:
            symbol = symbol or (d.dim_param or "?")
            dims.append(-1)
    return (None if symbol else tuple(dims)), tensor.elem_type, symbol


def _static(entry) -> bool:
    return entry is not None and entry[0] is not None and bool(entry[1])


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


# ----------------------------------------------------------------------------- methods 2 and 3


_SHAPE_LIKE = 64  # a tensor this small may be a computed shape, size, scale or index list: keep its producer


def _region(model: onnx.ModelProto, unknown: list[str], known: dict) -> onnx.ModelProto | None:
    """The part of ``model`` that computes the ``unknown`` tensors, fed by tensors of known shape.

    Symbolic inference visits every node, in Python; most of a model (the backbone) has shapes onnx
    already knows. The region keeps the producers of the unknown tensors and, walking up, the producers
    of every input whose *value* may matter (small tensors: computed shapes, sizes, scales, indices, and
    tensors of unknown shape). When the region leaves a dimension symbolic, the whole model is inferred
    again before any tensor is called data-dependent. Any other input of known shape becomes a graph input of that shape.
    None when the region would be the whole model anyway.
    """
    producers = _producers(model)
    weights = {t.name: t for t in model.graph.initializer}
    nodes: dict[int, onnx.NodeProto] = {}
    inputs: dict[str, onnx.ValueInfoProto] = {}
    order = {id(n): i for i, n in enumerate(model.graph.node)}
    stack = [producers[t] for t in unknown if t in producers]
    while stack:
        node = stack.pop()
        if id(node) in nodes:
            continue
        if node.op_type in ("Loop", "Scan", "If"):
            return None  # subgraphs read outer tensors implicitly: infer on the whole model
        nodes[id(node)] = node
        for name in node.input:
            if not name or name in weights or name in inputs:
                continue
            shape, elem = known.get(name, (None, 0))
            small = shape is not None and int(np.prod(shape)) <= _SHAPE_LIKE  # a value shapes may be read from
            if name in producers and (shape is None or not elem or small):
                stack.append(producers[name])
            elif shape is not None and elem:
                inputs[name] = helper.make_tensor_value_info(name, elem, list(shape))
            elif name in producers:
                stack.append(producers[name])
            else:
                graph_input = next((i for i in model.graph.input if i.name == name), None)
                if graph_input is None:
                    return None
                inputs[name] = graph_input
    if len(nodes) >= 0.8 * len(model.graph.node):
        return None
    kept = sorted(nodes.values(), key=lambda n: order[id(n)])
    used = {name for n in kept for name in n.input}
    graph = helper.make_graph(kept, "region", list(inputs.values()),
                              [helper.ValueInfoProto(name=t) for t in unknown if t in producers],
                              [w for name, w in weights.items() if name in used])
    region = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return region


def _symbolic(model: onnx.ModelProto) -> tuple[dict, str | None]:
    """onnxruntime's symbolic shape inference: name -> (static shape or None, elem, symbol or None)."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError as exc:  # sympy missing
        return {}, f"symbolic shape inference is unavailable ({exc})"
    from onnxruntime.tools import symbolic_shape_infer as module

    source = skeleton(model) if larger_than(model, _shapes._TWO_GB) else model
    partial = _KeepPartial(module.onnx)
    module.onnx = partial  # it saves a partial result into the working directory; keep it in memory instead
    error = None
    try:
        out = SymbolicShapeInference.infer_shapes(source, auto_merge=True, guess_output_rank=False)
    except Exception as exc:  # noqa: BLE001 - a third-party inference failing is one method failing
        out, error = partial.saved, f"symbolic shape inference failed ({_first_line(exc)})"
    finally:
        module.onnx = partial.onnx
    if out is None:
        return {}, error or "symbolic shape inference did not finish (an op it does not know)"
    types = {}
    for info in [*out.graph.value_info, *out.graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = _read_type(info)
    return types, error


class _KeepPartial:
    """The ``onnx`` module as symbolic shape inference sees it, with ``save_model`` keeping the model in memory."""

    def __init__(self, module) -> None:
        self.onnx, self.saved = module, None

    def save_model(self, model, *_args, **_kwargs) -> None:
        self.saved = model

    def __getattr__(self, name):
        return getattr(self.onnx, name)


def _execute(model: onnx.ModelProto, tensors: list[str], report: ShapeReport) -> tuple[tuple[dict, dict] | None, str | None]:
    """Run the model twice on synthetic inputs; the values of ``tensors`` of each run."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return None, f"onnxruntime is unavailable ({exc})"
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    declared = {o.name for o in probe.graph.output}
    del probe.graph.value_info[:]
    probe.graph.output.extend(helper.ValueInfoProto(name=t) for t in tensors if t not in declared)
    feeds = _synthetic_inputs(model, report)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        with tempfile.TemporaryDirectory(prefix="splitc-shapes-") as tmp:
            if larger_than(probe, _shapes._TWO_GB):
                path = os.path.join(tmp, "probe.onnx")
                onnx.save_model(probe, path, save_as_external_data=True, location="probe.data")
                session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            else:
                session = ort.InferenceSession(probe.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            runs = []
            for fill in feeds:
                values = session.run(names, fill)
                runs.append({n: np.asarray(v) for n, v in zip(names, values) if n in set(tensors)})
    except Exception as exc:  # noqa: BLE001 - onnxruntime refusing the model is this method failing
        return None, f"onnxruntime could not run the model ({_first_line(exc)})"
    return (runs[0], runs[1]), None


def _synthetic_inputs(model: onnx.ModelProto, report: ShapeReport) -> list[dict[str, np.ndarray]]:
    """Two fills of every input; integer fills are chosen to be valid indices and lengths."""
    readers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, k))
    rng = np.random.default_rng(0)
    first, second = {}, {}
    for value in real_inputs(model):
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        shape = tuple(d.dim_value for d in tensor.shape.dim)
        if dtype.kind == "f":
            first[value.name] = rng.standard_normal(shape).astype(dtype)
            second[value.name] = rng.uniform(0.0, 1.0, shape).astype(dtype)
            report.synthetic_inputs[value.name] = "standard normal, then uniform [0, 1)"
        elif dtype.kind == "b":
            first[value.name] = np.ones(shape, dtype)
            second[value.name] = rng.integers(0, 2, shape).astype(dtype)
            report.synthetic_inputs[value.name] = "all true, then random"
        else:
            fill, bound, why = _integer_fill(model, value.name, readers.get(value.name, []))
            first[value.name] = np.full(shape, fill, dtype)
            second[value.name] = (rng.integers(0, bound, shape) if bound > 1 else np.full(shape, fill)).astype(dtype)
            report.synthetic_inputs[value.name] = why
    return [first, second]


def _integer_fill(model, name, readers) -> tuple[int, int, str]:
    """(first fill, exclusive bound for the second draw, description) of an integer input."""
    sizes = {i.name: [d.dim_value for d in i.dims] for i in model.graph.initializer}
    for node, k in readers:
        if node.op_type in _RNN_OPS and k == 4:
            x = next((i for i in model.graph.input if i.name == node.input[0]), None)
            layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
            length = x.type.tensor_type.shape.dim[1 if layout else 0].dim_value if x is not None else 1
            return length, 0, f"{length} (the sequence length of {node.op_type} {node.name!r})"
    for node, k in readers:
        if _INDEX_OPS.get(node.op_type) == k:
            table = sizes.get(node.input[0]) if node.op_type not in ("OneHot", "Embedding") else None
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            bound = table[axis] if table and len(table) > axis else 1
            return 0, max(bound, 1), f"zeros, then random indices below {bound} ({node.op_type} {node.name!r})"
    return 1, 0, "ones"


# ----------------------------------------------------------------------------- results


def _mark_data_dependent(model, unknown, symbols, producers, report: ShapeReport) -> None:
    """Seeds (symbolic dims, data-dependent ops, changing shapes), then what follows them among ``unknown``."""
    for t, symbol in symbols.items():
        report.data_dependent.setdefault(t, f"its shape depends on input values (dimension {symbol!r})")
    for t in unknown:
        node = producers.get(t)
        if node is not None and node.op_type in DATA_DEPENDENT_OPS and report.methods.get(t) != "symbolic":
            report.data_dependent.setdefault(t, f"{node.op_type} output: its shape depends on input values")
    unknown_set = set(unknown)
    for node in model.graph.node:  # topological: propagate along unknown tensors
        if any(i in report.data_dependent for i in node.input) and not all(
                report.methods.get(o) == "symbolic" for o in node.output if o):
            for o in node.output:
                if o in unknown_set and report.methods.get(o) != "symbolic":
                    report.data_dependent.setdefault(o, "computed from a data-dependent tensor")


def _with_types(model: onnx.ModelProto, resolved: dict[str, tuple[tuple[int, ...], int]]) -> onnx.ModelProto:
    if not resolved:
        return model
    keep = [v for v in model.graph.value_info if v.name not in resolved]
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    outputs = {o.name: o for o in model.graph.output}
    for name, (shape, elem) in resolved.items():
        info = helper.make_tensor_value_info(name, elem, list(shape))
        if name in outputs:
            outputs[name].type.CopyFrom(info.type)
        else:
            model.graph.value_info.append(info)
    return model


def _fail(tensor, producers, report, sym_error, run_error):
    node = producers.get(tensor)
    op = f"{node.domain + '.' if node.domain else ''}{node.op_type}" if node is not None else "?"
    why = "; ".join(e for e in (sym_error, run_error) if e)
    raise ShapeError(
        f"cannot resolve the shape of {tensor!r} (output of node {node.name if node else '?'!r}, op {op}); "
        f"tried {', '.join(report.tried)}" + (f": {why}" if why else "")
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


__all__ = ["ShapeReport", "resolve_shapes", "METHODS"]

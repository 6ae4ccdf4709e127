"""``Plan``: ``plan.json`` as typed, frozen dataclasses, with ``from_json``/``to_json``.

``Plan.from_json`` checks the fields a runtime needs (the schema, both halves' files and tensor specs, the
cut entries) and raises ``PlanFormatError`` naming the first bad field; ``to_json`` gives back the same
JSON (fields this reader does not type are kept in ``raw`` and written back unchanged: readers ignore
fields they do not know, so newer plans still load). ``plan["field"]`` reads the raw JSON, for fields
that have no typed attribute (costs, selection, alternatives: reports, not the runtime's business).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping

SCHEMA = "splitc.plan/1"
SCHEMA_PREFIX = "splitc.plan/"


class PlanFormatError(ValueError):
    """A ``plan.json`` that does not follow docs/plan.md; the message names the field."""


def _need(obj: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, Mapping) or key not in obj:
        raise PlanFormatError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise PlanFormatError(f"{where}.{key}: expected {names}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class TensorSpec:
    """A tensor's name, static shape (None: unknown) and numpy dtype name (``float32``, ``int64``...)."""

    name: str
    shape: tuple[int, ...] | None
    dtype: str | None

    @classmethod
    def from_json(cls, data: Any, where: str) -> TensorSpec:
        name = _need(data, "name", str, where)
        shape = data.get("shape")
        if shape is not None and not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            raise PlanFormatError(f"{where}.shape: expected a list of integers")
        return cls(name, None if shape is None else tuple(shape), data.get("dtype"))


@dataclass(frozen=True)
class Half:
    """One half: its file in the output directory, its inputs and outputs, its target and precision."""

    file: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    target: str | None = None
    precision: str = "fp32"

    @classmethod
    def from_json(cls, data: Any, where: str) -> Half:
        specs = {k: tuple(TensorSpec.from_json(t, f"{where}.{k}[{i}]")
                          for i, t in enumerate(_need(data, k, list, where))) for k in ("inputs", "outputs")}
        return cls(_need(data, "file", str, where), specs["inputs"], specs["outputs"], data.get("target"),
                   data.get("precision", "fp32"))


@dataclass(frozen=True)
class CutEntry:
    """One tensor sent edge → cloud: its width, quantization axis, wire tensors and codec entry."""

    tensor: str
    shape: tuple[int, ...]
    dtype: str
    bits: int
    axis: int | None
    wire: tuple[str, ...]
    codec: Mapping[str, Any]

    @classmethod
    def from_json(cls, data: Any, where: str) -> CutEntry:
        shape = _need(data, "shape", list, where)
        codec = data.get("codec", {"name": "none"})
        if not isinstance(codec, Mapping) or not isinstance(codec.get("name"), str):
            raise PlanFormatError(f"{where}.codec: expected an object with a 'name'")
        return cls(_need(data, "tensor", str, where), tuple(shape), str(data.get("dtype", "float32")),
                   int(data.get("bits", 32)), data.get("axis"),
                   tuple(data.get("wire") or [data["tensor"]]), dict(codec))


@dataclass(frozen=True)
class Plan:
    """A plan manifest (docs/plan.md), typed where the runtime reads it; ``raw`` is the whole JSON."""

    schema: str
    kind: str
    edge: Half
    cloud: Half | None
    cut: tuple[CutEntry, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Mapping[str, Any] | None = None
    fallback: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Any, source: str = "plan.json") -> Plan:
        """Check and type a parsed ``plan.json``; ``PlanFormatError`` names the first bad field."""
        if not isinstance(data, Mapping):
            raise PlanFormatError(f"{source}: not a JSON object")
        schema = data.get("schema")
        if not (isinstance(schema, str) and schema.startswith(SCHEMA_PREFIX)):
            raise PlanFormatError(f"{source}: not a splitc plan manifest (schema {schema!r})")
        if schema != SCHEMA:
            raise PlanFormatError(f"{source}: schema {schema!r} is newer than this reader ({SCHEMA})")
        model = _need(data, "model", Mapping, source)
        cloud = data.get("cloud")
        preprocess = data.get("preprocess")
        return cls(
            schema=schema,
            kind=str(data.get("kind", "split")),
            edge=Half.from_json(_need(data, "edge", Mapping, source), f"{source}: edge"),
            cloud=None if cloud is None else Half.from_json(cloud, f"{source}: cloud"),
            cut=tuple(CutEntry.from_json(c, f"{source}: cut[{i}]")
                      for i, c in enumerate(_need(data, "cut", list, source))),
            outputs=tuple(TensorSpec.from_json(o, f"{source}: model.outputs[{i}]")
                          for i, o in enumerate(_need(model, "outputs", list, f"{source}: model"))),
            preprocess=None if preprocess is None else dict(_need(data, "preprocess", Mapping, source)),
            fallback=bool(data.get("fallback", False)),
            raw=copy.deepcopy(dict(data)),
        )

    def to_json(self) -> dict:
        """The manifest as JSON (a copy: every field, typed or not)."""
        return copy.deepcopy(dict(self.raw))

    @property
    def output_names(self) -> list[str]:
        """The model's outputs, in order."""
        return [o.name for o in self.outputs]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """A raw JSON field (``default`` when absent)."""
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.raw

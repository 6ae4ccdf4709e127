"""``CompileOptions``: every setting of a compile, frozen, with the one set of defaults.

The command line builds one ``CompileOptions`` from its flags (its defaults are read from here), and
``splitc.compile(model, options)`` / ``splitc.adaptive.compile_range(model, span, options)`` take it.
Keyword arguments (``splitc.compile(model, target="jetson-tx2", bits=4)``) are the same settings by name:
they build, or override fields of, a ``CompileOptions``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from splitc.calibration import confidence
from splitc.calibration.confidence import DEFAULT_CONFIDENCE
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE


@dataclass(frozen=True)
class CompileOptions:
    """The settings of one compile (see ``splitc.compile`` for what each one means).

    ``target``/``cloud``: a built-in device name, a measured profile (``.json``) or a cost model.
    ``bandwidth`` (bytes/s or ``"5Mbps"``) and ``rtt`` (ms or ``"20ms"``): the link. ``cut``: the tensors
    to send (``()``: edge-only; None: the optimum). ``bits``: ``"auto"``, 1..8, 16 or 32. ``codec``:
    ``huffman`` or ``none``. ``calib``: calibration data (``.npz`` or an image folder with
    ``preprocess``). ``max_drop`` and ``confidence``: the certified accuracy bound. ``edge_precision``:
    ``fp32`` or ``fp16``. ``emit_fallback``: mark the plan usable for a local fallback. ``compress``: the edge
    rewrites the compile may choose among (``splitc.compress.names.FAMILIES``; a string ``"auto"``, ``"none"``
    or ``"a,b"`` is parsed; docs/compression.md).
    """

    target: Any = DEFAULT_EDGE
    cloud: Any = DEFAULT_CLOUD
    bandwidth: str | float = "5Mbps"
    rtt: str | float = "20ms"
    input_shapes: Mapping[str, tuple[int, ...]] | None = None
    cut: tuple[str, ...] | None = None
    alternatives: int = 5
    bits: str | int = "auto"
    codec: str = "huffman"
    calib: str | Path | None = None
    max_drop: float = 0.01
    confidence: float = DEFAULT_CONFIDENCE
    metric: str = "auto"
    per_channel: bool = False
    cache_dir: str | Path | None = None
    preprocess: str | None = None
    jpeg: bool = True
    edge_precision: str = "fp32"
    emit_fallback: bool = False
    compress: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.compress:  # "auto", "none", "a,b" or names: checked and normalised to a tuple of names
            from splitc.compress.names import parse_compress

            object.__setattr__(self, "compress", parse_compress(self.compress))
        if self.cut is not None and not isinstance(self.cut, tuple):
            object.__setattr__(self, "cut", tuple(self.cut))
        if self.input_shapes is not None:
            object.__setattr__(self, "input_shapes", {k: tuple(v) for k, v in dict(self.input_shapes).items()})
        confidence.check(self.confidence)

    def replace(self, **changes: Any) -> CompileOptions:
        """A copy with ``changes`` (unknown names are a TypeError naming them)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"unknown compile option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    @classmethod
    def build(cls, options: CompileOptions | None = None, **settings: Any) -> CompileOptions:
        """``options`` (or the defaults) with ``settings`` applied."""
        return (options or DEFAULTS).replace(**settings) if settings else (options or DEFAULTS)

    def encoding(self):
        """The cut-encoding part of the settings (``splitc.joint.EncodingOptions``)."""
        from splitc.joint import EncodingOptions

        return EncodingOptions(bits=self.bits, codec=self.codec, max_drop=self.max_drop, calib=self.calib,
                               metric=self.metric, per_channel=self.per_channel,
                               cache_dir=Path(self.cache_dir) if self.cache_dir else None,
                               preprocess=self.preprocess, jpeg=self.jpeg)


DEFAULTS = CompileOptions()

"""The cut tensors on the wire: edge-half outputs → frames → cloud-half inputs.

Each cut entry of ``plan.json`` names the edge outputs that carry it (``wire``)
and its ``bits``; quantized entries (1..8 bits) carry uint8 symbols plus their
min and max, which one frame of ``splitc.wire.codec`` holds together.
Integer and bool tensors (codec ``array``) travel exactly, as plain-array records.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitc.wire import codec, request
from splitc.artifacts.plan import CutEntry, Plan
from splitc.runtime.errors import PlanError


class CutCodec:
    """Encodes the edge half's cut outputs and decodes them into the cloud half's inputs."""

    def __init__(self, plan: Plan, out_dir: str | Path) -> None:
        self.entries: tuple[CutEntry, ...] = plan.cut
        self.books: dict[str, codec.Codebook] = {}
        self.range_shapes: dict[str, list[int]] = {}
        edge_outputs = {o.name: list(o.shape or ()) for o in plan.edge.outputs}
        for entry in self.entries:
            book = entry.codec.get("codebook")
            if book:
                self.books[entry.tensor] = _load_codebook(Path(out_dir) / book, entry.tensor)
            if entry.bits <= 8:
                self.range_shapes[entry.tensor] = edge_outputs.get(entry.wire[1], [])

    def warm_up(self) -> None:
        """Encode and decode one synthetic request, so that the codec kernels (numba: compiled, or loaded
        from its cache) and the JPEG codec are ready before the first real one."""
        rng = np.random.default_rng(0)
        at_edge: dict[str, np.ndarray] = {}
        for entry in self.entries:
            wire, shape, bits = entry.wire, entry.shape, entry.bits
            if is_array(entry):
                at_edge[wire[0]] = np.zeros(shape, entry.dtype)
            elif bits > 8:
                at_edge[wire[0]] = rng.standard_normal(shape).astype(np.float32)
            else:
                at_edge[wire[0]] = rng.integers(0, 1 << bits, shape, dtype=np.uint8)
                at_edge[wire[1]] = np.zeros(self.range_shapes[entry.tensor], np.float32)
                at_edge[wire[2]] = np.ones(self.range_shapes[entry.tensor], np.float32)
        self.decode(self.encode(at_edge))
        for bits in sorted({e.bits for e in self.entries if e.bits <= 8 and not is_array(e)}):
            _warm_modes(bits, rng)

    def encode(self, at_edge: dict[str, np.ndarray]) -> list[bytes]:
        """One frame per cut tensor, in the plan's order."""
        return [self._encode_one(entry, at_edge) for entry in self.entries]

    def _encode_one(self, entry: CutEntry, at_edge: dict[str, np.ndarray]) -> bytes:
        bits, wire = entry.bits, entry.wire
        if is_array(entry):
            return request.array_payload(np.asarray(at_edge[wire[0]], entry.dtype))
        if bits == 32:
            return codec.encode(np.asarray(at_edge[wire[0]], np.float32), 32)
        if bits == 16:
            return codec.encode(at_edge[wire[0]], 16, dtype="float32")
        q, lo, hi = (at_edge[name] for name in wire)
        spec = entry.codec
        coder = spec.get("name") if spec.get("name") in ("huffman", "jpeg") else "none"
        return codec.encode(q, bits, _ranges(lo), _ranges(hi), codebook=self.books.get(entry.tensor),
                            per_channel_axis=entry.axis, coder=coder, quality=int(spec.get("quality", 90)))

    def decode(self, frames: list[bytes]) -> dict[str, np.ndarray]:
        """The cloud half's inputs from the frames (checked against the plan)."""
        if len(frames) != len(self.entries):
            raise codec.CodecError(f"expected {len(self.entries)} cut tensors, got {len(frames)}")
        feeds: dict[str, np.ndarray] = {}
        for entry, frame in zip(self.entries, frames):
            feeds.update(self._decode_one(entry, frame))
        return feeds

    def _decode_one(self, entry: CutEntry, frame: bytes) -> dict[str, np.ndarray]:
        bits, wire, shape = entry.bits, entry.wire, list(entry.shape)
        # The plan's own tensor size bounds what a frame may make the decoder allocate.
        limit = max(1, int(np.prod(shape, dtype=object)))
        if is_array(entry):
            value = request.plain_array(frame, max_elements=limit)
            if str(value.dtype) != entry.dtype or list(value.shape) != shape:
                raise codec.CodecError(f"array for {entry.tensor!r} is {value.dtype} {list(value.shape)}, "
                                       f"the plan expects {entry.dtype} {shape}")
            return {wire[0]: value}
        values, meta = codec.decode(frame, codebook=self.books.get(entry.tensor), max_elements=limit)
        if meta.bits != bits or list(meta.shape) != list(shape):
            raise codec.CodecError(
                f"frame for {entry.tensor!r} holds {meta.bits}-bit shape {list(meta.shape)}, "
                f"the plan expects {bits}-bit shape {shape}"
            )
        axis = entry.axis
        want_axis = None if axis is None or bits > 8 else int(axis) % max(1, len(shape))
        if bits <= 8 and meta.per_channel_axis != want_axis:
            raise codec.CodecError(f"frame for {entry.tensor!r} has {_range_kind(meta.per_channel_axis)}, "
                                   f"the plan expects {_range_kind(want_axis)}")
        if bits > 8:
            dtype = np.float16 if bits == 16 else np.float32
            return {wire[0]: np.asarray(values, dtype).reshape(shape)}
        range_shape = self.range_shapes[entry.tensor]
        return {
            wire[0]: np.asarray(values, np.uint8).reshape(shape),
            wire[1]: np.asarray(meta.lo, np.float32).reshape(range_shape),
            wire[2]: np.asarray(meta.hi, np.float32).reshape(range_shape),
        }


def _warm_modes(bits: int, rng: np.random.Generator) -> None:
    """Encode and decode a ReLU-like sample in each mode the encoder may pick (it picks the smallest,
    so one synthetic tensor alone would leave the other modes' kernels cold)."""
    sample = np.minimum(rng.geometric(0.35, 1 << 14) - 1, (1 << bits) - 1).astype(np.uint8)
    for mode in codec.ENCODE_MODES:
        if mode != "static":  # static frames need a codebook; they share the embedded mode's kernels
            codec.decode(codec.encode(sample, bits, 0.0, 1.0, modes=(mode,)))


def is_array(entry: CutEntry) -> bool:
    """A cut entry sent as a plain array: an integer or bool tensor, exact (codec ``array``)."""
    return entry.codec.get("name") == "array"


def _range_kind(axis: int | None) -> str:
    return "one range" if axis is None else f"per-channel ranges along axis {axis}"


def _load_codebook(path: Path, tensor: str) -> codec.Codebook:
    """A plan's static codebook; a missing or corrupt file is a PlanError naming it (one line, no traceback)."""
    try:
        return codec.Codebook.from_bytes(path.read_bytes())
    except OSError as exc:
        raise PlanError(f"{path}: cannot read the codebook of cut tensor {tensor!r}: {exc.strerror or exc}") from exc
    except codec.CodecError as exc:
        raise PlanError(f"{path}: not a valid codebook for cut tensor {tensor!r} "
                        f"({type(exc).__name__}: {exc})") from exc


def _ranges(value: np.ndarray):
    value = np.asarray(value, np.float32)
    return float(value) if value.size == 1 and value.ndim == 0 else value.reshape(-1)

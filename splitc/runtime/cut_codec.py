"""The cut tensors on the wire: edge-half outputs → frames → cloud-half inputs.

Each cut entry of ``plan.json`` names the edge outputs that carry it (``wire``)
and its ``bits``; quantized entries (1..8 bits) carry uint8 symbols plus their
min and max, which one frame of ``splitc.runtime.codec`` holds together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from splitc.runtime import codec


class CutCodec:
    """Encodes the edge half's cut outputs and decodes them into the cloud half's inputs."""

    def __init__(self, plan: dict, out_dir: str | Path) -> None:
        self.entries = plan["cut"]
        self.books: dict[str, codec.Codebook] = {}
        self.range_shapes: dict[str, list[int]] = {}
        edge_outputs = {o["name"]: o["shape"] for o in plan["edge"]["outputs"]}
        for entry in self.entries:
            book = (entry.get("codec") or {}).get("codebook")
            if book:
                self.books[entry["tensor"]] = codec.Codebook.from_bytes((Path(out_dir) / book).read_bytes())
            if entry.get("bits", 32) <= 8:
                self.range_shapes[entry["tensor"]] = edge_outputs.get(entry["wire"][1], [])

    def encode(self, at_edge: dict[str, np.ndarray]) -> list[bytes]:
        """One frame per cut tensor, in the plan's order."""
        return [self._encode_one(entry, at_edge) for entry in self.entries]

    def _encode_one(self, entry: dict, at_edge: dict[str, np.ndarray]) -> bytes:
        bits, wire = entry.get("bits", 32), entry.get("wire", [entry["tensor"]])
        if bits == 32:
            return codec.encode(np.asarray(at_edge[wire[0]], np.float32), 32)
        if bits == 16:
            return codec.encode(at_edge[wire[0]], 16, dtype="float32")
        q, lo, hi = (at_edge[name] for name in wire)
        spec = entry.get("codec") or {}
        coder = spec.get("name") if spec.get("name") in ("huffman", "jpeg") else "none"
        return codec.encode(q, bits, _ranges(lo), _ranges(hi), codebook=self.books.get(entry["tensor"]),
                            per_channel_axis=entry.get("axis"), coder=coder, quality=int(spec.get("quality", 90)))

    def decode(self, frames: list[bytes]) -> dict[str, np.ndarray]:
        """The cloud half's inputs from the frames (checked against the plan)."""
        if len(frames) != len(self.entries):
            raise codec.CodecError(f"expected {len(self.entries)} cut tensors, got {len(frames)}")
        feeds: dict[str, np.ndarray] = {}
        for entry, frame in zip(self.entries, frames):
            feeds.update(self._decode_one(entry, frame))
        return feeds

    def _decode_one(self, entry: dict, frame: bytes) -> dict[str, np.ndarray]:
        values, meta = codec.decode(frame, codebook=self.books.get(entry["tensor"]))
        bits, wire, shape = entry.get("bits", 32), entry.get("wire", [entry["tensor"]]), entry["shape"]
        if meta.bits != bits or list(meta.shape) != list(shape):
            raise codec.CodecError(
                f"frame for {entry['tensor']!r} holds {meta.bits}-bit shape {list(meta.shape)}, "
                f"the plan expects {bits}-bit shape {shape}"
            )
        if bits > 8:
            dtype = np.float16 if bits == 16 else np.float32
            return {wire[0]: np.asarray(values, dtype).reshape(shape)}
        range_shape = self.range_shapes[entry["tensor"]]
        return {
            wire[0]: np.asarray(values, np.uint8).reshape(shape),
            wire[1]: np.asarray(meta.lo, np.float32).reshape(range_shape),
            wire[2]: np.asarray(meta.hi, np.float32).reshape(range_shape),
        }


def _ranges(value: np.ndarray):
    value = np.asarray(value, np.float32)
    return float(value) if value.size == 1 and value.ndim == 0 else value.reshape(-1)

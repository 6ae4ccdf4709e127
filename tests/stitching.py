"""Helpers of the stitching-runtime tests: compiled outputs, raw HTTP, a byte sink behind netem."""

from __future__ import annotations

import socket
import threading
import time
import warnings
from pathlib import Path

import numpy as np

import splitc
from splitc.testing import zoo
from splitc.cost.model import RooflineCostModel
from splitc.targets import Target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"
DIGITS = EXAMPLES / "digits_cnn.onnx"
CALIB = EXAMPLES / "calib.npz"
TEST = EXAMPLES / "test.npz"
DIGITS_MID = "/features/features.2/Relu_output_0"
RESNET_MID = "block2/relu"
# A slow edge device on which resnet_blocks gains from offloading at high bandwidth only.
SLOW_EDGE = RooflineCostModel(Target("slow-edge", "edge", "slow edge device", 3e9, 1e9, 0.5, 50.0, "tests"))


def compile_raw(out: Path) -> Path:
    """resnet_blocks cut mid-network, float32 on the wire, no codec: exact."""
    splitc.compile(zoo.build("resnet_blocks"), cut=[RESNET_MID], bits=32, codec="none").save(out)
    return out


def compile_quantized(out: Path) -> Path:
    """The digits CNN cut mid-network at 4 bits with a static Huffman codebook."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splitc.compile(DIGITS, target="raspberry-pi-4", cut=[DIGITS_MID], bits=4, calib=CALIB).save(out)
    return out


def digits_images(count: int) -> list[np.ndarray]:
    images = np.load(TEST)["image"][:count]
    return [image[None] for image in images]


def raw_http(port: int, payload: bytes, read: bool = True, timeout: float = 5.0) -> bytes:
    """Send raw bytes to 127.0.0.1:port and return what comes back before the server closes or goes idle."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        if not read:
            return b""
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data and _complete(data):
                break
        return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


class Sink:
    """A TCP server (127.0.0.1 by default): reads an 8-byte length and that many bytes, answers one byte."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket()
        self.sock.bind((host, 0))
        self.sock.listen()
        self.address = self.sock.getsockname()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn: socket.socket) -> None:
        with conn:
            while header := conn.recv(8, socket.MSG_WAITALL):
                remaining = int.from_bytes(header, "little")
                while remaining > 0:
                    chunk = conn.recv(min(65536, remaining))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                conn.sendall(b"k")

    def close(self) -> None:
        self.sock.close()


def timed_exchange(sock: socket.socket, nbytes: int) -> float:
    """Seconds to send ``nbytes`` through the sink and get its one-byte answer."""
    start = time.perf_counter()
    sock.sendall(nbytes.to_bytes(8, "little") + bytes(nbytes))
    sock.recv(1)
    return time.perf_counter() - start


def measure_link(port: int, nbytes: int, host: str = "127.0.0.1") -> tuple[float, float]:
    """(RTT in s, rate in bytes/s) of the path to a ``Sink``: the best of 7 empty exchanges, then one bulk one."""
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rtt = min(timed_exchange(sock, 0) for _ in range(7))
        bulk = timed_exchange(sock, nbytes)
    return rtt, nbytes / max(bulk - rtt, 1e-9)

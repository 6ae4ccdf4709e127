"""The edge client: fallback when the cloud is down or silent, refusals, retries, image inputs, the CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from splitc.runtime import CloudError, EdgeClient, Pipeline
from splitc.runtime.image_input import load_image
from splitc.runtime.server import ServerThread
from tests.stitching import compile_quantized, digits_images


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return compile_quantized(tmp_path_factory.mktemp("client") / "out")


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Silent:
    """A TCP server that accepts connections and never answers (the client must time out)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def test_fallback_runs_the_cloud_half_here_when_the_server_is_down(out) -> None:
    image = digits_images(1)[0]
    expected = Pipeline(out).run({"image": image})["logits"]
    with EdgeClient(out, _dead_url(), fallback="local", retries=1, timeout=2) as client:
        result = client.infer({"image": image})
    assert result.fallback and "ConnectError" in result.error and result.attempts == 0
    np.testing.assert_array_equal(result.outputs["logits"], expected)


def test_without_fallback_an_unreachable_cloud_is_an_error(out) -> None:
    with EdgeClient(out, _dead_url(), retries=0, timeout=2) as client, pytest.raises(CloudError, match="unreachable"):
        client.run({"image": digits_images(1)[0]})


def test_a_silent_server_times_out_then_falls_back(out) -> None:
    silent = Silent()
    try:
        start = time.monotonic()
        with EdgeClient(out, silent.url, fallback="local", retries=1, timeout=0.3) as client:
            result = client.infer({"image": digits_images(1)[0]})
        assert result.fallback and "Timeout" in result.error
        assert time.monotonic() - start < 5  # two attempts of 0.3 s plus the backoff
    finally:
        silent.close()


def test_refusals_are_not_retried_nor_hidden_by_the_fallback(out) -> None:
    with ServerThread(out, token="right") as running:
        with EdgeClient(out, running.url, token="wrong", fallback="local") as client:
            with pytest.raises(CloudError) as caught:
                client.run({"image": digits_images(1)[0]})
    assert caught.value.status == 401 and caught.value.code == "unauthorised"


def test_the_server_coming_back_is_used_again(out) -> None:
    image = digits_images(1)[0]
    with ServerThread(out) as running:
        url = running.url
        with EdgeClient(out, url, fallback="local", retries=0, timeout=2) as client:
            assert not client.infer({"image": image}).fallback
    with EdgeClient(out, url, fallback="local", retries=0, timeout=2) as client:
        assert client.infer({"image": image}).fallback


def test_load_image_shapes_and_scales(tmp_path) -> None:
    from PIL import Image

    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(pixels).save(tmp_path / "digit.png")
    grey = load_image(tmp_path / "digit.png", [1, 1, 8, 8])
    assert grey.shape == (1, 1, 8, 8) and grey.dtype == np.float32
    np.testing.assert_allclose(grey[0, 0], pixels / 255.0, atol=1e-6)
    assert load_image(tmp_path / "digit.png", [1, 3, 16, 16]).shape == (1, 3, 16, 16)
    assert load_image(tmp_path / "digit.png", [1, 16, 16, 3]).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError):
        load_image(tmp_path / "digit.png", [1, 4, 8, 8])


def test_cli_run_with_fallback_and_an_image(out, tmp_path) -> None:
    from PIL import Image

    Image.fromarray((digits_images(1)[0][0, 0] * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    env = {**os.environ, "COLUMNS": "160"}
    ran = subprocess.run([sys.executable, "-m", "splitc.cli", "run", str(out), "--input", str(tmp_path / "digit.png"),
                          "--cloud", _dead_url(), "--fallback", "local", "--retries", "0", "--save",
                          str(tmp_path / "y.npz")], capture_output=True, text=True, env=env, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "FALLBACK" in ran.stdout and "cloud unavailable" in ran.stdout
    expected = Pipeline(out).run({"image": load_image(tmp_path / "digit.png", [1, 1, 8, 8])})["logits"]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["logits"], expected)
    refused = subprocess.run([sys.executable, "-m", "splitc.cli", "run", str(out), "--input",
                              str(tmp_path / "digit.png"), "--cloud", _dead_url(), "--retries", "0"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert refused.returncode == 2 and "unreachable" in refused.stderr

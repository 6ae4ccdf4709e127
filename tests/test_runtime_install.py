"""The device-side install: ``splitc.runtime`` works with numpy, onnxruntime and httpx alone."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np

import splitc
from tests.conftest import run_model

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
MID = "/features/features.2/Relu_output_0"
RUNTIME_DEPS = {"numpy", "onnxruntime", "httpx"}
# Everything else the project depends on: a device without these must still run the halves.
BLOCKED = ["onnx", "scipy", "networkx", "pulp", "typer", "rich", "numba", "PIL", "starlette", "uvicorn",
           "prometheus_client", "click", "matplotlib", "tvm"]


def _name(requirement: str) -> str:
    for stop in "<>=![; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_the_device_extra_is_the_runtime_only() -> None:
    """The base install is the compiler; the device install (--no-deps + the `device` extra) is the runtime."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {_name(r) for r in project["optional-dependencies"]["device"]} == RUNTIME_DEPS
    base = {_name(r) for r in project["dependencies"]}
    assert RUNTIME_DEPS | {"onnx", "scipy", "networkx", "pulp", "typer", "sympy"} <= base
    readme = (ROOT / "README.md").read_text()
    assert "pip install --no-deps splitc" in readme


def test_runtime_imports_and_runs_without_the_compiler_stack(tmp_path: Path) -> None:
    split = splitc.compile(DIGITS, target="raspberry-pi-4", bandwidth="1Mbps", bits=4, cut=[MID],
                           calib=str(ROOT / "examples" / "digits" / "calib.npz"))
    out = split.save(tmp_path / "out")
    x = np.load(ROOT / "examples" / "digits" / "sample.npy")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: not a runtime dependency)")
                return None

        sys.meta_path.insert(0, Block())
        for name in list(sys.modules):
            if name.split(".")[0] in BLOCKED:
                del sys.modules[name]
        import numpy as np
        from splitc.runtime import EdgeClient, Pipeline
        from splitc.wire import codec
        x = np.load({str(tmp_path / "x.npy")!r})
        a = Pipeline({str(out)!r}).run({{"image": x}})["logits"]
        with EdgeClient({str(out)!r}, None, fallback="local") as client:
            b = client.run({{"image": x}})["logits"]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not loaded, loaded
        np.save({str(tmp_path / "y.npy")!r}, np.stack([a, b]))
        print("ok", codec.__name__)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    got = np.load(tmp_path / "y.npy")
    reference = _pipeline_reference(out, x)
    np.testing.assert_allclose(got[0], reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[1], reference, rtol=1e-6, atol=1e-6)
    float_logits = run_model(DIGITS, {"image": x})["logits"]
    assert got[0].argmax() == float_logits.argmax()


def _pipeline_reference(out: Path, x: np.ndarray) -> np.ndarray:
    from splitc.runtime import Pipeline

    return Pipeline(out).run({"image": x})["logits"]

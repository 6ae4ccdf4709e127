"""The TVM backend without apache-tvm, and its target table: none of this needs TVM."""

from __future__ import annotations

import sys
import warnings

import pytest

import splitc
from splitc.testing import zoo
from splitc.backends.tvm import TVMNotInstalled, TVMTargetError
from splitc.backends.tvm.build import require_tvm
from splitc.backends.tvm.targets import CUDA_ARCH, EDGE, edge_target
from splitc.cli import main
from splitc.errors import SplitcError
from splitc.targets import TARGETS


@pytest.fixture
def no_tvm(monkeypatch):
    for name in [m for m in sys.modules if m == "tvm" or m.startswith("tvm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tvm", None)  # `import tvm` raises ImportError


def test_missing_tvm_is_a_one_line_install_hint(no_tvm):
    with pytest.raises(TVMNotInstalled, match=r"pip install 'splitc\[tvm\]'") as caught:
        require_tvm()
    assert isinstance(caught.value, SplitcError) and "\n" not in str(caught.value)


def test_cli_backend_tvm_without_tvm_exits_2(no_tvm, tmp_path, capsys):
    import onnx

    onnx.save(zoo.build("chain_cnn"), tmp_path / "m.onnx")
    assert main([str(tmp_path / "m.onnx"), "--backend", "tvm", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'splitc[tvm]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_save_rejects_unknown_backends(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(zoo.build("chain_cnn"), cut=["stage2/pool"], bits=32)
    with pytest.raises(SplitcError, match="onnx or tvm"):
        split.save(tmp_path / "a", backend="tensorrt")
    with pytest.raises(SplitcError, match="needs tvm"):
        split.save(tmp_path / "b", tvm_fallback="onnx")


def test_target_table_covers_every_edge_device():
    edge = [t.name for t in TARGETS.values() if t.role == "edge"]
    cpus = {name: EDGE[name].target["mcpu"] for name in edge if name in EDGE}
    assert cpus == {"jetson-tx2": "cortex-a57", "jetson-nano": "cortex-a57", "jetson-orin-nano": "cortex-a78ae",
                    "raspberry-pi-4": "cortex-a72", "snapdragon-835": "cortex-a73"}
    assert all(EDGE[n].target["mtriple"] == "aarch64-linux-gnu" and EDGE[n].cross_compiler for n in cpus)
    with pytest.raises(TVMTargetError, match="32-bit ARMv7"):
        edge_target("tegra-k1")
    assert set(CUDA_ARCH) == {t.name for t in TARGETS.values() if t.role == "cloud"}


def test_cloud_gets_cuda_only_with_toolchain_and_gpu(monkeypatch):
    from splitc.backends.tvm import targets

    monkeypatch.setattr(targets, "cuda_missing", lambda: None)
    chosen = targets.cloud_target("a100", lambda message: pytest.fail(message))
    assert chosen.target == {"kind": "cuda", "arch": "sm_80", "host": {"kind": "llvm"}} and chosen.device == "cuda"
    monkeypatch.setattr(targets, "cuda_missing", lambda: "no CUDA GPU visible")
    host = {"kind": "llvm", "mcpu": "x"}
    monkeypatch.setattr(targets, "host_target", lambda name, note: targets.TvmTarget(name, host, None, note))
    said = []
    chosen = targets.cloud_target("t4", said.append)
    assert chosen.target["kind"] == "llvm" and chosen.device == "cpu"
    assert said and "no CUDA GPU visible" in said[0] and "instead of CUDA" in said[0]

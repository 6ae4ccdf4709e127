"""``CompileOptions``: one frozen set of settings, the same compile through options or keywords."""

from __future__ import annotations

import dataclasses
import json

import pytest

import splitc
from splitc.errors import SplitcError
from splitc.options import DEFAULTS, CompileOptions
from splitc.testing import zoo


def test_options_are_frozen_and_replace_checks_names() -> None:
    options = CompileOptions(target="jetson-tx2", cut=["a", "b"])
    assert options.cut == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.bits = 4  # type: ignore[misc]
    assert options.replace(bits=4).bits == 4 and options.bits == "auto"
    with pytest.raises(TypeError, match="unknown compile option.*bitz"):
        options.replace(bitz=4)
    with pytest.raises(SplitcError, match="confidence"):
        CompileOptions(confidence=1.5)


def test_cli_defaults_come_from_the_options() -> None:
    from typer.main import get_command

    from splitc.cli import app

    params = {p.name: p.default for p in get_command(app).commands["compile"].params}
    assert params["target"] == DEFAULTS.target and params["cloud"] == DEFAULTS.cloud
    assert params["bw"] == DEFAULTS.bandwidth and params["rtt"] == DEFAULTS.rtt
    assert params["bits"] == str(DEFAULTS.bits) and params["codec"] == DEFAULTS.codec


def _plan(split) -> dict:
    plan = json.loads(json.dumps(split.plan))
    plan.pop("solve_ms", None)  # wall times
    plan["model"].pop("shapes", None)
    return plan


def test_keywords_options_and_the_deprecated_positional_target_compile_the_same() -> None:
    model = zoo.build("chain_cnn")
    settings = dict(bandwidth="2Mbps", rtt="5ms", bits=32, codec="none")
    by_keywords = splitc.compile(model, target="jetson-tx2", **settings)
    by_options = splitc.compile(model, CompileOptions(target="jetson-tx2", **settings))
    overridden = splitc.compile(model, CompileOptions(target="raspberry-pi-4", **settings), target="jetson-tx2")
    with pytest.warns(DeprecationWarning, match="deprecated"):
        positional = splitc.compile(model, "jetson-tx2", **settings)
    expected = _plan(by_keywords)
    for split in (by_options, overridden, positional):
        assert _plan(split) == expected

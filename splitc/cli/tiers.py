"""``splitc MODEL --tiers DEVICE,EDGE,CLOUD --link device-edge=BW/RTT --link edge-cloud=BW/RTT``: three tiers.

``compile_command`` hands its flags here when ``--tiers`` or ``--link`` is given. The output layout and
how to serve it are in docs/three-tier.md.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from splitc.cli.common import _bits, _print_warnings, _progress, _shapes, _wall_time, console
from splitc.errors import SplitcError
from splitc.units import format_bandwidth, parse_bandwidth, parse_fraction, parse_time_ms

LINKS = ("device-edge", "edge-cloud")
# compile flags that mean nothing with --tiers, and their defaults
_NOT_FOR_TIERS = {"target": "--target", "cloud": "--cloud", "bw": "--bw", "rtt": "--rtt",
                  "edge_precision": "--edge-precision", "backend": "--backend", "tvm_fallback": "--tvm-fallback",
                  "emit_fallback": "--emit-fallback", "per_channel": "--per-channel"}


def parse_tiers(text: str | None) -> list[str]:
    """``DEVICE,EDGE,CLOUD`` as three target names (or measured profiles), each checked."""
    from splitc.cost.resolve import cost_model_for
    from splitc.tiered import DEFAULT_TIERS

    if text is None:
        return list(DEFAULT_TIERS)
    names = [t.strip() for t in text.split(",")]
    if len(names) != 3 or not all(names):
        raise SplitcError(f"--tiers takes three targets DEVICE,EDGE,CLOUD (see `splitc targets`), not {text!r}")
    for name in names:
        cost_model_for(name)  # an unknown target is one line naming the known ones
    return names


def parse_links(texts: list[str] | None) -> list[tuple[float, float]]:
    """``device-edge=20Mbps/5ms`` and ``edge-cloud=200Mbps/30ms`` as (bytes/s, ms), in that order."""
    from splitc.tiered import DEFAULT_LINKS, parse_link

    if not texts:
        return [parse_link(link) for link in DEFAULT_LINKS]
    found: dict[str, tuple[float, float]] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        bandwidth, slash, rtt = value.partition("/")
        if not sep or not slash or name.strip() not in LINKS:
            raise SplitcError(f"bad --link {text!r}: expected device-edge=BW/RTT or edge-cloud=BW/RTT, "
                              f"e.g. device-edge=20Mbps/5ms")
        if name.strip() in found:
            raise SplitcError(f"--link {name.strip()} is given twice")
        try:
            found[name.strip()] = (parse_bandwidth(bandwidth), parse_time_ms(rtt))
        except SplitcError as exc:
            raise SplitcError(f"bad --link {text!r}: {exc}") from None
    if len(found) != 2:
        missing = next(n for n in LINKS if n not in found)
        raise SplitcError(f"three tiers need two links: --link device-edge=BW/RTT --link edge-cloud=BW/RTT "
                          f"(missing {missing})")
    return [found[n] for n in LINKS]


def parse_cuts(text: str | None) -> tuple[list[str], list[str]] | None:
    """``--cut A,B|C``: the tensors sent over the device-edge link, then over the edge-cloud link."""
    if text is None:
        return None
    parts = text.split("|")
    if len(parts) != 2:
        raise SplitcError(f"with --tiers, --cut is DEVICE_EDGE_TENSORS|EDGE_CLOUD_TENSORS (e.g. 'a,b|c'), "
                          f"not {text!r}")
    return tuple([t.strip() for t in part.split(",") if t.strip()] for part in parts)


def _bits_pair(text: str):
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) > 2:
        raise SplitcError(f"with --tiers, --bits is one width or two (device-edge,edge-cloud), not {text!r}")
    pair = [_bits(p) for p in parts]
    return pair[0] if len(pair) == 1 else tuple(pair)


def _check_flags(options: dict) -> None:
    from splitc.options import DEFAULTS

    defaults = {"target": DEFAULTS.target, "cloud": DEFAULTS.cloud, "bw": DEFAULTS.bandwidth, "rtt": DEFAULTS.rtt,
                "edge_precision": "fp32", "backend": "onnx", "tvm_fallback": None, "emit_fallback": False,
                "per_channel": False}
    for key, flag in _NOT_FOR_TIERS.items():
        if key in options and options[key] != defaults[key]:
            raise SplitcError(f"{flag} does not apply with --tiers (name the devices in --tiers DEVICE,EDGE,CLOUD "
                              f"and the links with --link)")


def tiers_command(model: Path, tiers: str | None, link: list[str] | None, out: Path, bits: str = "auto",
                  codec: str = "huffman", calib: Path | None = None, max_drop: str = "1%", confidence: str = "95%",
                  metric: str = "auto", cut: str | None = None, input_shape: list[str] | None = None,
                  as_json: bool = False, preprocess: str | None = None, **other) -> None:
    """Compile MODEL for three tiers and write OUT (the flags of ``splitc compile``; see the module doc)."""
    from splitc.tiered import compile_tiers

    _check_flags(other)
    targets, links = parse_tiers(tiers), parse_links(link)
    quiet = as_json or not console.is_terminal
    with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        split = compile_tiers(model, targets, links, _bits_pair(bits), calib, parse_fraction(max_drop),
                              _shapes(input_shape), parse_cuts(cut), codec, metric, parse_fraction(confidence),
                              preprocess, step)
        step("writing the output directory")
        split.save(out)
    _print_warnings(caught)
    summary = _summary(split, out)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    _print_report(summary, split)


def _summary(split, out: Path) -> dict:
    p = split.prediction
    links = []
    for k, name in enumerate(LINKS):
        cut = split.parts.link1 if k == 0 else split.parts.link2
        links.append({"name": name, "bandwidth_Bps": split.links[k][0], "rtt_ms": split.links[k][1],
                      "cut": [{"tensor": t, "bytes": split.graph.values[t].nbytes, "bits": split.encodings[t].bits,
                               "predicted_bytes": split.sizes[t], "relayed": t in split.parts.relayed} for t in cut],
                      "transfer_ms": p["transfer_ms"][k], "used": p["used"][k]})
    tiers = [{"tier": name, "target": split.targets[k], "nodes": len(split.parts.nodes[k]),
              "compute_ms": p["compute_ms"][k]} for k, name in enumerate(("device", "edge", "cloud"))]
    return {"out": str(out), "tiers": tiers, "links": links, "total_ms": p["total_ms"], "accuracy": split.accuracy,
            "plans": {k: str(out / k) if (out / k).is_dir() else None for k in ("device", "edge", "cloud")}}


def _print_report(summary: dict, split) -> None:
    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    say("Three tiers: " + " | ".join(f"{t['tier']} {t['target']} ({t['nodes']} nodes, {t['compute_ms']:.2f} ms)"
                                      for t in summary["tiers"]))
    for link in summary["links"]:
        head = f"{link['name']} ({format_bandwidth(link['bandwidth_Bps'])}, {link['rtt_ms']:g} ms RTT): "
        cuts = ", ".join(f"{c['tensor']} {c['bytes']} B raw -> {c['predicted_bytes']:.0f} B at {c['bits']} bits"
                         + (" (relayed)" if c["relayed"] else "") for c in link["cut"]) or "nothing sent"
        say(f"  {head}{cuts}; {link['transfer_ms']:.2f} ms")
    t = summary["tiers"]
    ms = [t[0]["compute_ms"], summary["links"][0]["transfer_ms"], t[1]["compute_ms"],
          summary["links"][1]["transfer_ms"], t[2]["compute_ms"]]
    say("Predicted: device {:.2f} + device-edge {:.2f} + edge {:.2f} + edge-cloud {:.2f} + cloud {:.2f} "
        "= {:.2f} ms".format(*ms, summary["total_ms"]))
    acc = summary["accuracy"]
    if acc.get("checked"):
        say(f"Accuracy: the composed model's {acc['metric']} drop {acc['drop']:.3%}, certified bound "
            f"{acc['drop_bound']:.3%} at {acc['confidence']:.0%} (max {acc['max_drop']:.2%}, {acc['samples']} samples)")
    else:
        say("Accuracy: exact (raw float32 cuts)" if acc.get("exact") else "Accuracy: NOT checked (no --calib)")
    plans = summary["plans"]
    say(f"Wrote {summary['out']}: tiers.json, device/" + (", edge/" if plans["edge"] else "")
        + (", cloud/" if plans["cloud"] else ""))
    if plans["cloud"]:
        say(f"  cloud:  splitc serve {plans['cloud']} --host 0.0.0.0 --port 8001")
        say(f"  edge:   splitc serve {plans['edge']} --host 0.0.0.0 --port 8000 --upstream http://CLOUD:8001")
    elif plans["edge"]:
        say(f"  edge:   splitc serve {plans['edge']} --host 0.0.0.0 --port 8000")
    if plans["edge"]:
        say(f"  device: splitc run {plans['device']} --cloud http://EDGE:8000 --input x.npy")
    say(f"done in {_wall_time()}")

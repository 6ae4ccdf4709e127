"""``splitc serve`` (uvicorn or Ray Serve) and ``splitc netem`` (the link emulator)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from splitc.cli.common import (
    app,
    errors,
)
from splitc.errors import SplitcError


@app.command("serve")
def serve_command(
    out: Path = typer.Argument(..., help="A splitc output directory (one plan or a bandwidth range)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 to accept remote clients)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Require this bearer token (file content)."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="TLS certificate (PEM); needs --tls-key."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    max_body: str = typer.Option("64MB", "--max-body", help="Largest accepted request body: 64MB, 512KB."),
    threads: int = typer.Option(0, "--threads", help="Requests run at once (0: one per core)."),
    reply_bits: int = typer.Option(32, "--reply-bits", help="Float outputs on the wire: 32 (exact) or 16."),
    engine: str = typer.Option("uvicorn", "--engine", help="uvicorn (one process) or ray (Ray Serve: "
                               "docs/scaling.md)."),
    replicas: int = typer.Option(1, "--replicas", help="ray: replicas per plan."),
    autoscale: Optional[str] = typer.Option(None, "--autoscale", help="ray: MIN..MAX replicas per plan, by load."),
    batch_max: int = typer.Option(1, "--batch-max", help="ray: requests per onnxruntime call (1: no batching)."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="ray: longest wait to fill a batch (ms)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: join this cluster (HOST:PORT or auto)."),
    upstream: Optional[str] = typer.Option(None, "--upstream", help="Relay to this cloud server (OUT is the edge/ "
                                           "directory of a three-tier compile): http://cloud:8000."),
    upstream_timeout: float = typer.Option(10.0, "--upstream-timeout", help="Seconds to wait for the upstream."),
) -> None:
    """Serve the cloud halves of OUT over HTTP (POST /v1/infer, GET /v1/plans, /healthz, /metrics)."""
    from splitc.cli.stitch_report import parse_size, print_serving, read_token
    from splitc.runtime.server import serve

    if upstream is not None and engine != "uvicorn":
        raise SplitcError("--upstream needs the uvicorn engine (--engine uvicorn)")
    if engine == "ray" and (out / "relay.json").is_file():
        raise SplitcError(f"{out} is a relaying edge output: serve it with --upstream URL on the uvicorn engine")
    if not 0 < upstream_timeout < float("inf"):
        raise SplitcError(f"--upstream-timeout must be a number of seconds above 0, not {upstream_timeout:g}")
    if engine == "ray":
        return _serve_ray(out, host, port, token_file, tls_cert, tls_key, max_body, reply_bits, replicas, autoscale,
                          batch_max, batch_wait_ms, address)
    if engine != "uvicorn":
        raise SplitcError(f"--engine must be uvicorn or ray, not {engine!r}")
    print_serving(errors, out, host, port, tls_cert is not None, token_file is not None)
    serve(out, host, port, read_token(token_file), str(tls_cert) if tls_cert else None,
          str(tls_key) if tls_key else None, parse_size(max_body), threads or None, reply_bits,
          upstream=upstream, upstream_timeout=upstream_timeout)


def _serve_ray(out, host, port, token_file, tls_cert, tls_key, max_body, reply_bits, replicas, autoscale, batch_max,
               batch_wait_ms, address) -> None:
    """``splitc serve --engine ray`` (splitc/runtime/ray_engine.py); its errors are one line, exit 2."""
    from splitc.cli.stitch_report import parse_size, print_serving, read_token
    from splitc.runtime import ray_engine

    try:
        ray_engine.require_ray()
        options = ray_engine.RayOptions(replicas=replicas, batch_max=batch_max, batch_wait_ms=batch_wait_ms,
                                        address=address,
                                        autoscale=ray_engine.parse_autoscale(autoscale) if autoscale else None)
        if autoscale and replicas != 1:
            raise ray_engine.EngineError("give --replicas or --autoscale, not both")
        options.check()
        if address:
            ray_engine.check_address(address, options.connect_timeout_s)
        print_serving(errors, out, host, port, tls_cert is not None, token_file is not None)
        ray_engine.serve_ray(out, host, port, read_token(token_file), str(tls_cert) if tls_cert else None,
                             str(tls_key) if tls_key else None, parse_size(max_body), reply_bits, options,
                             announce=lambda line: errors.print(line, highlight=False))
    except ray_engine.EngineError as exc:
        raise SplitcError(str(exc)) from None


@app.command("netem")
def netem_command(
    listen: str = typer.Option("127.0.0.1:9001", "--listen", help="HOST:PORT the proxy accepts on."),
    to: str = typer.Option("127.0.0.1:8000", "--to", help="HOST:PORT it forwards to."),
    bw: Optional[str] = typer.Option(None, "--bw", help="Rate of each direction: 5Mbps, 300KBps (default: unlimited)."),
    rtt: str = typer.Option("0ms", "--rtt", help="Round-trip time added: 40ms (half each way)."),
    trace: Optional[Path] = typer.Option(
        None, "--trace", help="A mahimahi uplink trace (one line per 1500-byte delivery opportunity, in ms; "
        "repeated when it ends): the uplink follows it instead of --bw."),
) -> None:
    """A user-space TCP proxy that emulates a link: token-bucket rate (or a trace) and delay per direction."""
    from splitc.cli.stitch_report import parse_host_port
    from splitc.runtime.netem import read_trace, run
    from splitc.units import parse_bandwidth, parse_time_ms

    rate = parse_bandwidth(bw) if bw else None
    if trace is not None:
        stamps = read_trace(trace)  # a bad trace is one line naming the file and line, before listening
        errors.print(f"netem: {listen} -> {to}, uplink replays {trace} ({len(stamps)} opportunities per "
                     f"{stamps[-1]} ms), downlink {bw or 'unlimited'}, {rtt} RTT (Ctrl-C stops)")
    else:
        errors.print(f"netem: {listen} -> {to}, {bw or 'unlimited'}, {rtt} RTT (Ctrl-C stops)")
    run(parse_host_port(listen), parse_host_port(to), rate, parse_time_ms(rtt), trace=trace)

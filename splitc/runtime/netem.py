"""Network emulation in user space: a TCP proxy that shapes rate and adds delay.

Each direction has a token bucket (``rate`` bytes/s, ``burst`` bytes) and a
one-way delay of ``rtt / 2``: a chunk leaves the proxy once its bytes have
been "transmitted" at the bucket's rate plus the delay, like a link with a
serialisation rate and a propagation delay. The proxy stops reading from a
sender whose backlog exceeds ``queue_s`` seconds of transmission, so TCP flow
control slows the sender as a bottleneck link would. Rates and the RTT can be
changed while it runs (``set_link``).

    with NetemThread(("127.0.0.1", 8000), rate=625_000, rtt_ms=40) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"       # 5 Mbps, 40 ms RTT to the server

**Trace mode.** ``trace=`` (a mahimahi trace file, or its timestamps) makes the
uplink (client to server) follow a recorded link instead of a fixed rate: each
line of the trace is a millisecond at which 1500 bytes may cross, several lines
may share a millisecond, and the trace repeats with its period (its last
timestamp), as in mahimahi's ``mm-link``. The trace clock starts when the proxy
starts. Opportunities that find no queued bytes are lost, as on a real link.
The downlink keeps the fixed rate (``rate``/``down_rate``).

    with NetemThread(("127.0.0.1", 8000), trace="Verizon-LTE-short.up", rtt_ms=40) as proxy: ...
"""

from __future__ import annotations

import asyncio
import bisect
import math
import os
import threading
import time
from collections.abc import Sequence

from splitc.errors import SplitcError

QUEUE_S = 0.05  # backlog the shaper accepts before it stops reading (a router's buffer, in seconds)
MTU = 1500  # bytes one delivery opportunity of a trace carries


class TraceError(SplitcError):
    """A link trace is missing, empty or malformed."""


def read_trace(path: str | os.PathLike) -> list[int]:
    """The timestamps (ms) of a mahimahi trace file, checked; blank lines are skipped.

    Raises ``TraceError`` naming the file and line for an unreadable or empty
    file, a line that is not a non-negative integer, a timestamp smaller than
    the one before it, or a trace whose last timestamp is 0 (zero period).
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise TraceError(f"{path}: cannot read the trace: {exc.strerror or exc}") from None
    numbered = [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]
    for number, text in numbered:
        if not text.isdigit():
            raise TraceError(f"{path}:{number}: {text[:40]!r} is not a millisecond timestamp "
                             "(a non-negative integer)")
    return check_trace([int(text) for _, text in numbered], str(path), [number for number, _ in numbered])


def check_trace(timestamps: Sequence[int], source: str = "trace", lines: Sequence[int] | None = None) -> list[int]:
    """``timestamps`` as a list of ints if they form a valid trace, else ``TraceError`` (see ``read_trace``).

    ``lines`` gives the file line of each timestamp for the messages (default: its position, from 1).
    """
    stamps = [int(value) for value in timestamps]
    lines = list(lines) if lines is not None else list(range(1, len(stamps) + 1))
    if not stamps:
        raise TraceError(f"{source}: the trace is empty (no timestamps)")
    for index, value in enumerate(stamps):
        if value < 0:
            raise TraceError(f"{source}:{lines[index]}: timestamp {value} is negative")
        if index and value < stamps[index - 1]:
            raise TraceError(f"{source}:{lines[index]}: timestamp {value} is smaller than the one before it "
                             f"({stamps[index - 1]}); a trace must not decrease")
    if stamps[-1] == 0:
        raise TraceError(f"{source}:{lines[-1]}: the trace lasts 0 ms (its last timestamp is 0); "
                         "its period must be positive")
    return stamps


class TraceLink:
    """Delivery opportunities of a trace: ``MTU`` bytes at each timestamp, repeating with the period.

    ``reserve`` has ``TokenBucket``'s contract: it queues ``nbytes`` behind the
    bytes already reserved and says how long until they have all crossed. The
    clock is ``time.monotonic()`` seconds, ``origin`` the trace's time 0.
    """

    def __init__(self, timestamps: Sequence[int], source: str = "trace", origin: float | None = None) -> None:
        self.timestamps = check_trace(timestamps, source)
        self.period_ms = self.timestamps[-1]
        self.origin = time.monotonic() if origin is None else origin
        self.next = 0  # index of the first opportunity not yet used
        self.spare = 0  # bytes still free in opportunity ``next - 1``

    @property
    def rate(self) -> float:
        """Mean rate of the trace, bytes/s."""
        return len(self.timestamps) * MTU * 1e3 / self.period_ms

    def opportunity_ms(self, index: int) -> int:
        """Time (ms since the origin) of opportunity ``index`` (0-based, counting through the repeats)."""
        cycle, position = divmod(index, len(self.timestamps))
        return self.timestamps[position] + cycle * self.period_ms

    def first_at_or_after(self, t_ms: float) -> int:
        """Index of the first opportunity at or after ``t_ms`` (ms since the origin, >= 0)."""
        cycle = max(0, math.floor(t_ms / self.period_ms) - 1)
        index = cycle * len(self.timestamps)
        while True:  # at most three rounds: the cycle before, the one containing t_ms, the next
            position = bisect.bisect_left(self.timestamps, t_ms - cycle * self.period_ms)
            if position < len(self.timestamps):
                return index + position
            cycle, index = cycle + 1, index + len(self.timestamps)

    def reserve(self, nbytes: int, now: float) -> float:
        """Queue ``nbytes`` at ``now`` (monotonic s); the seconds until their last byte has crossed."""
        first = self.first_at_or_after(max(0.0, (now - self.origin) * 1e3))
        if self.next <= first:  # the link went idle: the opportunities up to now are gone
            self.next, self.spare = first, 0
        if nbytes <= self.spare:
            self.spare -= nbytes
            done = self.opportunity_ms(self.next - 1)
        else:
            packets = -(-(nbytes - self.spare) // MTU)
            self.spare = packets * MTU - (nbytes - self.spare)
            self.next += packets
            done = self.opportunity_ms(self.next - 1)
        return max(0.0, self.origin + done / 1e3 - now)


class TokenBucket:
    """Rate ``rate`` bytes/s with up to ``burst`` bytes sent at once; ``reserve`` says how long to wait."""

    def __init__(self, rate: float | None, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    def reserve(self, nbytes: int, now: float) -> float:
        """Take ``nbytes`` of tokens (going negative if need be); the seconds until they are all sent."""
        if not self.rate:
            return 0.0
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= nbytes
        return max(0.0, -self.tokens / self.rate)


class Direction:
    """One direction of the link: its bucket (a ``TokenBucket`` or a ``TraceLink``) and its one-way delay."""

    def __init__(self, rate: float | None, delay_s: float, burst: float | None = None,
                 trace: TraceLink | None = None) -> None:
        self.delay_s = delay_s
        self.bucket = trace or TokenBucket(rate, burst if burst is not None else _default_burst(rate))

    @property
    def quantum(self) -> int:
        """Bytes read per step: about 2 ms of transmission, 1500..16384 bytes."""
        rate = self.bucket.rate
        return 16384 if not rate else int(min(16384, max(1500, rate * 0.002)))


def _default_burst(rate: float | None) -> float:
    return 16384 if not rate else min(16384, max(1500, rate * 0.002))


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: Direction) -> None:
    queue: asyncio.Queue = asyncio.Queue()
    deliver = asyncio.ensure_future(_deliver(queue, writer))
    try:
        while True:
            data = await reader.read(link.quantum)
            if not data:
                break
            now = time.monotonic()
            wait = link.bucket.reserve(len(data), now)
            queue.put_nowait((now + wait + link.delay_s, data))
            if wait > QUEUE_S:
                await asyncio.sleep(wait - QUEUE_S)
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait(None)
        await deliver


async def _deliver(queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    try:
        while (item := await queue.get()) is not None:
            due, data = item
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


def load_link_trace(trace: str | os.PathLike | Sequence[int]) -> TraceLink:
    """A ``TraceLink`` from a trace file's path or from its timestamps (ms); ``TraceError`` if it is bad."""
    if isinstance(trace, (str, os.PathLike)):
        return TraceLink(read_trace(trace), str(trace))
    return TraceLink(trace)


class Netem:
    """The proxy (asyncio): ``await start()``, ``set_link(...)``, ``await stop()``.

    ``trace`` (a path or timestamps) drives the uplink from a mahimahi trace instead of ``up_rate``/``rate``;
    its clock starts at ``start()``.
    """

    def __init__(self, to: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0), rate: float | None = None,
                 rtt_ms: float = 0.0, up_rate: float | None = None, down_rate: float | None = None,
                 trace: str | os.PathLike | Sequence[int] | None = None) -> None:
        self.to, self.listen = to, listen
        self.trace = load_link_trace(trace) if trace is not None else None
        self.up = Direction(up_rate or rate, rtt_ms / 2e3, trace=self.trace)
        self.down = Direction(down_rate or rate, rtt_ms / 2e3)
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def set_link(self, rate: float | None = None, rtt_ms: float | None = None) -> None:
        """Change the rate (both directions, but not a trace-driven uplink) and/or the RTT, for the next bytes."""
        for direction in (self.up, self.down):
            if rate is not None and isinstance(direction.bucket, TokenBucket):
                direction.bucket.rate = rate
                direction.bucket.burst = _default_burst(rate)
            if rtt_ms is not None:
                direction.delay_s = rtt_ms / 2e3

    async def start(self) -> "Netem":
        self.server = await asyncio.start_server(self._connection, *self.listen)
        if self.trace is not None:
            self.trace.origin = time.monotonic()
        return self

    async def stop(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _connection(self, client_reader, client_writer) -> None:
        task = asyncio.current_task()
        self.tasks.add(task)
        self.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.to)
        except OSError:
            client_writer.close()
            self.tasks.discard(task)
            return
        try:
            await asyncio.gather(_pump(client_reader, server_writer, self.up),
                                 _pump(server_reader, client_writer, self.down))
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio's stream callback reports a cancelled handler as an error)
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            self.tasks.discard(task)


class NetemThread:
    """A ``Netem`` proxy on its own event loop in a background thread (tests, benchmarks)."""

    def __init__(self, to: tuple[str, int], **options) -> None:
        self.netem = Netem(to, **options)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.netem.port

    def set_link(self, rate: float | None = None, rtt_ms: float | None = None) -> None:
        """Change the link from any thread."""
        self.loop.call_soon_threadsafe(self.netem.set_link, rate, rtt_ms)

    def start(self) -> "NetemThread":
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.netem.start(), self.loop).result(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.netem.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> "NetemThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def run(listen: tuple[str, int], to: tuple[str, int], rate: float | None, rtt_ms: float,
        trace: str | os.PathLike | None = None) -> None:
    """Run the proxy until interrupted (``splitc netem``); ``trace``: a mahimahi file driving the uplink.

    A bad trace raises ``TraceError`` before the proxy starts listening.
    """
    link = Netem(to, listen, rate, rtt_ms, trace=trace)

    async def main() -> None:
        netem = await link.start()
        async with netem.server:
            await netem.server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

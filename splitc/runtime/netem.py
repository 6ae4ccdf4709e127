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
"""

from __future__ import annotations

import asyncio
import threading
import time

QUEUE_S = 0.05  # backlog the shaper accepts before it stops reading (a router's buffer, in seconds)


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
    """One direction of the link: its bucket and its one-way delay."""

    def __init__(self, rate: float | None, delay_s: float, burst: float | None = None) -> None:
        self.delay_s = delay_s
        self.bucket = TokenBucket(rate, burst if burst is not None else _default_burst(rate))

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


class Netem:
    """The proxy (asyncio): ``await start()``, ``set_link(...)``, ``await stop()``."""

    def __init__(self, to: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0), rate: float | None = None,
                 rtt_ms: float = 0.0, up_rate: float | None = None, down_rate: float | None = None) -> None:
        self.to, self.listen = to, listen
        self.up = Direction(up_rate or rate, rtt_ms / 2e3)
        self.down = Direction(down_rate or rate, rtt_ms / 2e3)
        self.server: asyncio.base_events.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self.connections = 0

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def set_link(self, rate: float | None = None, rtt_ms: float | None = None) -> None:
        """Change the rate (both directions) and/or the RTT; takes effect for the next bytes."""
        for direction in (self.up, self.down):
            if rate is not None:
                direction.bucket.rate = rate
                direction.bucket.burst = _default_burst(rate)
            if rtt_ms is not None:
                direction.delay_s = rtt_ms / 2e3

    async def start(self) -> "Netem":
        self.server = await asyncio.start_server(self._connection, *self.listen)
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


def run(listen: tuple[str, int], to: tuple[str, int], rate: float | None, rtt_ms: float) -> None:
    """Run the proxy until interrupted (``splitc netem``)."""

    async def main() -> None:
        netem = await Netem(to, listen, rate, rtt_ms).start()
        async with netem.server:
            await netem.server.serve_forever()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

"""The pymodbus peer of `fieldlink bench modbus`: the same Modbus TCP load
read by pymodbus' asyncio client.

Usage: pymodbus_load.py LOAD.json

LOAD.json (written by the bench):

    {"devices": [["127.1.0.1", 15020], ...],
     # input-register reads per poll group, each with the u16 tags it serves
     "groups": [[[start, count, [["t0000", offset], ...]], ...], ...],
     "unit_id": 1, "interval_s": 1.0, "warmup_s": 2.0, "duration_s": 30.0,
     "timeout_s": 1.0, "connect_concurrency": 256}

Like the gateway: one AsyncModbusTcpClient (one TCP connection) per device and
one asyncio task per device; a device starts polling as soon as it is
connected and reads every poll group every interval, the group's reads one
after the other; a tick missed because the previous poll ran late is skipped,
not caught up. `interval_s` 0 polls back to back (saturation), as the
gateway does with a poll interval of 0. No retries (the gateway does not
retry either). Each answered read is decoded as the gateway decodes it: one
point (tag, value, time) per tag, the value the tag's register.

Once every device is connected and `warmup_s` has passed, it measures for
`duration_s`: transactions, registers, points, exceptions, errors, each
request's and each poll group's latency, and the process's CPU time
(time.process_time). Prints one JSON object on stdout; diagnostics go to
stderr.
"""

import asyncio
import json
import logging
import math
import sys
import time
from array import array

try:
    from pymodbus import __version__ as PYMODBUS_VERSION
    from pymodbus.client import AsyncModbusTcpClient
except ImportError as e:  # reported by the bench as "peer missing"
    print(f"pymodbus is not importable: {e}", file=sys.stderr)
    sys.exit(3)


class Stats:
    """What the devices did inside the measuring window."""

    def __init__(self):
        self.window = [math.inf, math.inf]  # monotonic start, end
        self.transactions = 0
        self.registers = 0
        self.points = 0
        self.exceptions = 0
        self.errors = 0
        self.late_ticks = 0
        self.request_ns = array("q")
        self.group_ns = array("q")
        self.connected = 0
        self.connect_failures = 0
        self.error_samples = []

    def inside(self, t):
        return self.window[0] <= t < self.window[1]


async def read(client, start, count, tags, unit, stats):
    """One request; returns (registers, points, exception, error)."""
    try:
        rr = await client.read_input_registers(start, count=count, device_id=unit)
    except Exception as e:  # timeout, broken connection
        if len(stats.error_samples) < 5:
            stats.error_samples.append(f"{type(e).__name__}: {e}")
        return 0, None, False, True
    if rr.isError():
        return 0, None, True, False
    registers = rr.registers
    now = time.time_ns()
    points = [(name, registers[offset], now) for name, offset in tags]
    return len(registers), points, False, False


async def device(host, port, load, sem, stats):
    """Connects one device and polls it until the window has ended."""
    client = AsyncModbusTcpClient(
        host, port=port, timeout=load["timeout_s"], retries=0
    )
    async with sem:
        ok = await client.connect()
    if not ok:
        stats.connect_failures += 1
        client.close()
        return
    stats.connected += 1
    groups, unit = load["groups"], load["unit_id"]
    interval = load["interval_s"]
    tick = time.monotonic()
    try:
        while tick < stats.window[1]:
            now = time.monotonic()
            if tick > now:
                await asyncio.sleep(tick - now)
            for reads in groups:
                g0 = time.perf_counter_ns()
                results = []
                for start, count, tags in reads:
                    t0 = time.perf_counter_ns()
                    registers, points, exception, error = await read(
                        client, start, count, tags, unit, stats
                    )
                    results.append(
                        (time.perf_counter_ns() - t0, registers, points, exception, error)
                    )
                g1 = time.perf_counter_ns()
                if stats.inside(time.monotonic()):
                    stats.group_ns.append(g1 - g0)
                    for ns, registers, points, exception, error in results:
                        stats.transactions += 1
                        stats.registers += registers
                        stats.points += len(points) if points else 0
                        stats.exceptions += exception
                        stats.errors += error
                        stats.request_ns.append(ns)
            if interval <= 0:
                # Saturation: the next poll goes out at once.
                tick = time.monotonic()
                continue
            # Keep the cadence; after a stall, skip missed ticks.
            tick += interval
            now = time.monotonic()
            if tick < now:
                if stats.inside(now):
                    stats.late_ticks += 1
                tick = now + interval
    finally:
        client.close()


def quantiles(samples):
    """count, mean, p50, p99, max of nanosecond samples, in milliseconds."""
    if not samples:
        return {"count": 0, "mean": None, "p50": None, "p99": None, "max": None}
    s = sorted(samples)
    n = len(s)

    def q(p):
        return s[min(n - 1, max(0, math.ceil(p * n) - 1))] / 1e6

    return {
        "count": n,
        "mean": sum(s) / n / 1e6,
        "p50": q(0.50),
        "p99": q(0.99),
        "max": s[-1] / 1e6,
    }


async def main(path):
    with open(path, encoding="utf-8") as f:
        load = json.load(f)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    stats = Stats()
    sem = asyncio.Semaphore(load.get("connect_concurrency", 256))
    n = len(load["devices"])
    started = time.monotonic()
    tasks = [
        asyncio.create_task(device(host, port, load, sem, stats))
        for host, port in load["devices"]
    ]
    connect_deadline = started + 60 + n / 100
    while stats.connected + stats.connect_failures < n and time.monotonic() < connect_deadline:
        await asyncio.sleep(0.05)
    connect_secs = time.monotonic() - started
    window_start = time.monotonic() + load["warmup_s"]
    stats.window = [window_start, window_start + load["duration_s"]]
    await asyncio.sleep(max(0.0, window_start - time.monotonic()))
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, stats.window[1] - time.monotonic()))
    cpu1, wall1 = time.process_time(), time.monotonic()
    # Polls in flight finish (bounded by the request timeout) and are left out.
    await asyncio.wait(tasks, timeout=load["timeout_s"] * 4 * max(1, len(load["groups"])) + 5)
    for t in tasks:
        t.cancel()
    seconds = wall1 - wall0
    cpu = cpu1 - cpu0
    per_poll = sum(len(reads) for reads in load["groups"])
    out = {
        "pymodbus": PYMODBUS_VERSION,
        "python": sys.version.split()[0],
        "devices": n,
        "connected": stats.connected,
        "connect_failures": stats.connect_failures,
        "connect_secs": connect_secs,
        "seconds": seconds,
        "transactions": stats.transactions,
        "transactions_per_sec": stats.transactions / seconds if seconds > 0 else 0.0,
        "expected_transactions_per_sec": (
            stats.connected * per_poll / load["interval_s"] if load["interval_s"] > 0 else None
        ),
        "registers": stats.registers,
        "registers_per_sec": stats.registers / seconds if seconds > 0 else 0.0,
        "points": stats.points,
        "points_per_sec": stats.points / seconds if seconds > 0 else 0.0,
        "exceptions": stats.exceptions,
        "errors": stats.errors,
        "error_samples": stats.error_samples,
        "late_ticks": stats.late_ticks,
        "cpu_seconds": cpu,
        "cpu_utilization": cpu / seconds if seconds > 0 else 0.0,
        "registers_per_cpu_second": stats.registers / cpu if cpu > 0 else None,
        "transactions_per_cpu_second": stats.transactions / cpu if cpu > 0 else None,
        "points_per_cpu_second": stats.points / cpu if cpu > 0 else None,
        "request_latency_ms": quantiles(stats.request_ns),
        "poll_latency_ms": quantiles(stats.group_ns),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    asyncio.run(main(sys.argv[1]))

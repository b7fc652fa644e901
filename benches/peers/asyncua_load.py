"""The asyncua (FreeOpcUa) peer of `fieldlink bench opcua`: subscribes to the
same N variables the gateway subscribes to, with the same publishing and
sampling interval, in calls and subscriptions the server accepts, then
counts data changes over a window.

Input (stdin, JSON): {"url": ..., "nodes": ["ns=2;s=...", ...],
"interval_ms": 1000, "per_call": 5000, "per_subscription": 50000,
"warmup_s": 2, "window_s": 20}.
Output (stdout, JSON): {"asyncua": version, "python": version, "items": N,
"created": n, "create_secs": s, "items_per_sec": r, "window_secs": w,
"changes": c, "changes_per_sec": r2, "rss_bytes": b}.
"""

import asyncio
import importlib.metadata
import json
import platform
import resource
import sys
import time

from asyncua import Client, ua


class Counter:
    def __init__(self) -> None:
        self.changes = 0

    def datachange_notification(self, node, val, data) -> None:
        self.changes += 1


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def main() -> None:
    spec = json.load(sys.stdin)
    nodes = spec["nodes"]
    interval = float(spec["interval_ms"])
    per_call = int(spec["per_call"])
    per_sub = int(spec["per_subscription"])
    counter = Counter()
    async with Client(url=spec["url"], timeout=120) as client:
        started = time.monotonic()
        created = 0
        subs = []
        for first in range(0, len(nodes), per_sub):
            params = ua.CreateSubscriptionParameters(
                RequestedPublishingInterval=interval,
                RequestedLifetimeCount=60,
                RequestedMaxKeepAliveCount=10,
                MaxNotificationsPerPublish=4000,
                PublishingEnabled=True,
                Priority=0,
            )
            sub = await client.create_subscription(params, counter)
            subs.append(sub)
            block = nodes[first : first + per_sub]
            for at in range(0, len(block), per_call):
                chunk = [client.get_node(n) for n in block[at : at + per_call]]
                handles = await sub.subscribe_data_change(
                    chunk, sampling_interval=interval, queuesize=1
                )
                created += sum(1 for h in handles if isinstance(h, int))
        create_secs = time.monotonic() - started
        await asyncio.sleep(float(spec["warmup_s"]))
        before = counter.changes
        t0 = time.monotonic()
        await asyncio.sleep(float(spec["window_s"]))
        window = time.monotonic() - t0
        changes = counter.changes - before
        rss = rss_bytes()
    print(
        json.dumps(
            {
                "asyncua": importlib.metadata.version("asyncua"),
                "python": platform.python_version(),
                "items": len(nodes),
                "created": created,
                "create_secs": create_secs,
                "items_per_sec": created / create_secs if create_secs > 0 else None,
                "window_secs": window,
                "changes": changes,
                "changes_per_sec": changes / window if window > 0 else None,
                "rss_bytes": rss,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

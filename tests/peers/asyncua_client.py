"""An OPC UA client on asyncua (FreeOpcUa), the interop peer of the
simulator's OPC UA face: browses Objects/Devices, and for every device reads
its properties and variables with their source timestamps. Prints one JSON
object: {"devices": {"<id>": {"properties": {...}, "values": {"<tag>":
[value, source_unix_ms, status]}}}}.
"""

import argparse
import asyncio
import json
from datetime import timezone

from asyncua import Client, ua


def plain(value):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return str(value)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    args = p.parse_args()
    out = {"devices": {}}
    async with Client(url=args.url, timeout=10) as client:
        idx = await client.get_namespace_index("urn:fieldlink:sim")
        devices = await client.nodes.objects.get_child([f"{idx}:Devices"])
        for device in await devices.get_children():
            name = (await device.read_browse_name()).Name
            entry = {"properties": {}, "values": {}}
            for prop in await device.get_properties():
                entry["properties"][(await prop.read_browse_name()).Name] = plain(await prop.read_value())
            variables = await device.get_children(refs=ua.ObjectIds.HasComponent)
            for var in variables:
                dv = await var.read_data_value()
                ts = dv.SourceTimestamp
                if ts is not None and ts.tzinfo is None:
                    ts = ts.replace(tzinfo=timezone.utc)
                entry["values"][(await var.read_browse_name()).Name] = [
                    plain(dv.Value.Value if dv.Value is not None else None),
                    round(ts.timestamp() * 1000) if ts is not None else None,
                    dv.StatusCode.name if dv.StatusCode is not None else "Good",
                ]
            out["devices"][name] = entry
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())

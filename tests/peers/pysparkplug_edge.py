"""A Sparkplug B edge node written with pysparkplug (an implementation
nobody here wrote), for tests/e2e/interop_sparkplug.rs.

Usage: pysparkplug_edge.py HOST PORT GROUP EDGE DEVICE

It births the edge node and one device whose class and category are birth
metrics named fieldlink/class and fieldlink/category, then sends the
device's voltage every 200 ms. Commands on stdin: `gap` skips a sequence
number (a forged gap). Prints `ready` once connected and `ncmd rebirth`
for every rebirth request it receives.
"""

import sys
import threading
import time

import pysparkplug as psp


def main() -> None:
    host, port, group, edge, device = sys.argv[1:6]
    now = psp.get_current_timestamp()

    def on_ncmd(_node, message) -> None:
        for metric in message.payload.metrics:
            if metric.name == "Node Control/Rebirth" and metric.value:
                print("ncmd rebirth", flush=True)

    node = psp.EdgeNode(
        group,
        edge,
        [
            psp.Metric(
                timestamp=now,
                name="Node Control/Rebirth",
                datatype=psp.DataType.BOOLEAN,
                value=False,
            )
        ],
        client=psp.Client(client_id=edge),
        cmd_callback=on_ncmd,
    )
    node.register(
        psp.Device(
            device,
            [
                psp.Metric(timestamp=now, name="fieldlink/class", datatype=psp.DataType.STRING, value="operating"),
                psp.Metric(timestamp=now, name="fieldlink/category", datatype=psp.DataType.STRING, value="power"),
                psp.Metric(timestamp=now, name="voltage", datatype=psp.DataType.DOUBLE, value=230.0),
            ],
        )
    )
    node.connect(host, port=int(port), blocking=False)
    while not node._connected:
        time.sleep(0.05)
    print("ready", flush=True)

    def commands() -> None:
        for line in sys.stdin:
            if line.strip() == "gap":
                _ = node._seq  # take a sequence number and never send it
                print("gap", flush=True)

    threading.Thread(target=commands, daemon=True).start()
    i = 0
    while True:
        time.sleep(0.2)
        i += 1
        node.update_device(
            device,
            [
                psp.Metric(
                    timestamp=psp.get_current_timestamp(),
                    name="voltage",
                    datatype=psp.DataType.DOUBLE,
                    value=230.0 + (i % 10),
                )
            ],
        )


if __name__ == "__main__":
    main()

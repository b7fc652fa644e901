"""A Modbus TCP device served by pymodbus, for Fieldlink's interop tests.

Usage: pymodbus_server.py PORT

Prints `ready PORT` once listening and serves until killed. The register map
(zero-based protocol addresses) is what tests/e2e/interop.rs expects:

holding registers 0..: 1500 (u16 rpm), 655 (u16, x0.1 %), f32 1234.5 (big
word order), -40 (i16), "VMC850" (string, 3 registers)
input registers 0..: f32 12.25 in little word order
coils 0..: 1, 0, 1        discrete inputs 0..: 0, 1
"""

import struct
import sys

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus.server import StartTcpServer


def f32_words(value, little_word_order=False):
    hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    return [lo, hi] if little_word_order else [hi, lo]


def main():
    port = int(sys.argv[1])
    holding = [1500, 655] + f32_words(1234.5) + [(-40) & 0xFFFF] + [
        0x564D,  # "VM"
        0x4338,  # "C8"
        0x3530,  # "50"
    ]
    inputs = f32_words(12.25, little_word_order=True)
    # pymodbus' data blocks are addressed from 1: protocol address 0 is
    # block address 1.
    device = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, holding),
        ir=ModbusSequentialDataBlock(1, inputs),
        co=ModbusSequentialDataBlock(1, [1, 0, 1]),
        di=ModbusSequentialDataBlock(1, [0, 1]),
    )
    context = ModbusServerContext(devices=device, single=True)
    print(f"ready {port}", flush=True)
    StartTcpServer(context=context, address=("127.0.0.1", port))


if __name__ == "__main__":
    main()

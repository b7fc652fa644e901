"""An OPC UA server on asyncua (FreeOpcUa), the interop peer of the gateway's
OPC UA driver.

It serves one object, Boiler7, with four variables that change every 100 ms,
at opc.tcp://127.0.0.1:PORT/fieldlink/test/. With --security
sign-and-encrypt it offers only Basic256Sha256 SignAndEncrypt, with its own
certificate (--cert DER, --key PEM), and accepts only the client certificate
given by --trust (DER). Prints `ready` on stdout once it listens, and serves
until stdin closes.
"""

import argparse
import asyncio
import sys

from asyncua import Server, ua
from asyncua.common.utils import ServiceError
from cryptography.hazmat.primitives.serialization import Encoding


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--security", choices=["none", "sign-and-encrypt"], default="none")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--trust")
    args = p.parse_args()

    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{args.port}/fieldlink/test/")
    server.set_server_name("Fieldlink interop peer")
    await server.set_application_uri("urn:fieldlink:test:asyncua")
    if args.security == "sign-and-encrypt":
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        await server.load_certificate(args.cert)
        await server.load_private_key(args.key)
        with open(args.trust, "rb") as f:
            trusted = f.read()

        async def validate(cert, _app) -> None:
            if cert.public_bytes(Encoding.DER) != trusted:
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

        server.set_certificate_validator(validate)
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])

    idx = await server.register_namespace("urn:fieldlink:test")
    boiler = await server.nodes.objects.add_object(ua.NodeId("Boiler7", idx), "Boiler7")
    temperature = await boiler.add_variable(ua.NodeId("Boiler7.Temperature", idx), "Temperature", 20.0)
    pressure = await boiler.add_variable(ua.NodeId("Boiler7.Pressure", idx), "Pressure", 1.5)
    running = await boiler.add_variable(ua.NodeId("Boiler7.Running", idx), "Running", True)
    count = await boiler.add_variable(
        ua.NodeId("Boiler7.Count", idx), "Count", ua.Variant(0, ua.VariantType.Int32)
    )

    stdin_closed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def watch_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stdin_closed.set)

    loop.run_in_executor(None, watch_stdin)
    async with server:
        print("ready", flush=True)
        t = 0
        while not stdin_closed.is_set():
            try:
                await asyncio.wait_for(stdin_closed.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
            t += 1
            await temperature.write_value(20.0 + (t % 50) * 0.1)
            await pressure.write_value(1.5 + (t % 7) * 0.01)
            await running.write_value(t % 20 != 0)
            await count.write_value(ua.Variant(t, ua.VariantType.Int32))


if __name__ == "__main__":
    asyncio.run(main())

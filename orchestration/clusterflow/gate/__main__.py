"""``python -m clusterflow.gate``: serve until SIGTERM or SIGINT (settings: clusterflow.gate.config)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from clusterflow.gate import config
from clusterflow.gate.server import Gate


async def serve(settings: config.GateConfig) -> None:
    server = await Gate(settings).start()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # as PID 1 SIGTERM is ignored unless handled
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    logging.getLogger("clusterflow.gate").info(
        "launch gate on %s:%d for the engine at %s (data %s, cache %s, limits %s, images %s)", settings.host,
        settings.port, settings.socket, settings.settings.data_source, settings.settings.cache_source,
        settings.settings.limits, "pinned by digest" if settings.settings.pins else
        f"by digest from {settings.settings.registry}" if settings.settings.registry else "local builds")
    async with server:
        await stop.wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="launch-gate: %(message)s")
    try:
        settings = config.from_env()
    except ValueError as exc:
        print(f"launch-gate: {exc}", file=sys.stderr)
        sys.exit(2)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()

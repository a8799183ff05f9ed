"""Gateway service adapter: HTTP (ingest API, STOW-RS) and DICOM SCP in, study events out.

The gateway is the pipeline's producer, not a Faust consumer; it runs until SIGTERM/SIGINT and
then drains (runner.run_gateway publishes pending studies before closing).
"""

from __future__ import annotations

import asyncio
import logging
import signal

from radalign.config import Settings
from radalign.framework.logredact import install_log_redaction
from services.gateway.runner import run_gateway


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run_gateway(settings, stop)


def main(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    asyncio.run(_serve(settings))

"""`run_gateway`: the gateway process (HTTP app + DICOM SCP + study assembler) on real dependencies."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from radalign.blobstore import open_blob_store
from radalign.config import Settings
from radalign.ingest.outbox import PostgresOutbox
from radalign.ingest.pseudonyms import PostgresPseudonymStore
from services.gateway.dicom_scp import DicomScp
from services.gateway.http_app import CORE_KEY, build_gateway_app

log = logging.getLogger(__name__)


async def run_gateway(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or the task is cancelled). Shutdown order: the SCP stops
    taking associations, the HTTP app stops, the assembler publishes the studies already quiet
    (the others stay in the PostgreSQL outbox for the next start), then the producer and the
    database pool close."""
    from radalign.db import apply_migrations, open_pool
    from radalign.framework.producer import KafkaEventPublisher

    stop = stop or asyncio.Event()
    await asyncio.to_thread(apply_migrations, settings.dsn)
    blobs = open_blob_store(settings.blob_root, settings.s3_endpoint_url)
    pool = await open_pool(settings, min_size=1, max_size=4, name="gateway")
    try:
        async with KafkaEventPublisher(settings, stage="gateway") as publisher:

            async def database_ready() -> bool:
                async with pool.connection() as conn:
                    await conn.execute("SELECT 1")
                return True

            app = build_gateway_app(
                settings, publisher, blobs, PostgresPseudonymStore(pool), outbox=PostgresOutbox(pool),
                ready_checks={"database": database_ready},
            )
            runner = web.AppRunner(app, access_log=None)  # access logs would carry client addresses only; kept off
            await runner.setup()
            site = web.TCPSite(runner, settings.gateway_host, settings.gateway_port)
            await site.start()
            scp = DicomScp(settings, app[CORE_KEY], asyncio.get_running_loop())
            scp.start()
            log.info("gateway serving HTTP on %s:%d", settings.gateway_host, settings.gateway_port)
            try:
                await stop.wait()
            finally:
                await asyncio.to_thread(scp.stop)
                await runner.cleanup()
    finally:
        await pool.close()

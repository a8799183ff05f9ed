"""A real MLLP listener for tests and the demo: python-hl7's asyncio MLLP server in a thread,
keeping every message it receives and answering each with an original-mode ACK (AA by default;
`ack_code` AE / AR to refuse, `silent` to never answer, `fail_first` to drop the first N
connections without an answer)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import hl7
from hl7.mllp import start_hl7_server


class MllpListener:
    def __init__(self, *, ack_code: str = "AA", reason: str = "", silent: bool = False, fail_first: int = 0) -> None:
        self.ack_code = ack_code
        self.reason = reason
        self.silent = silent
        self.fail_first = fail_first
        self.received: list[hl7.Message] = []
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def _client(self, reader: Any, writer: Any) -> None:
        with self._lock:
            self.connections += 1
            drop = self.connections <= self.fail_first
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                with self._lock:
                    self.received.append(message)
                if self.silent or drop:
                    continue
                ack = message.create_ack(self.ack_code, application="RIS", facility="TEST")
                if self.reason:
                    ack.segment("MSA").assign_field(self.reason, 3)
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                self._server = await start_hl7_server(self._client, host, port, encoding="utf-8")
                self.port = self._server.sockets[0].getsockname()[1]
                ready.set()

            loop.run_until_complete(serve())
            loop.run_forever()
            self._server.close()
            loop.run_until_complete(self._server.wait_closed())
            loop.close()

        self._thread = threading.Thread(target=run, name="mllp-listener", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the MLLP listener did not start")
        return self.port

    def messages(self) -> list[hl7.Message]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

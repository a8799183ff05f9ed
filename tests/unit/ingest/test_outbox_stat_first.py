"""The outbox hands out STAT studies before routine ones that have waited longer (issue 27: a STAT
study posted behind a routine backlog waited for the whole backlog to be published)."""

from __future__ import annotations

import asyncio

from radalign.ingest.outbox import InMemoryOutbox, OutboxItem
from schemas.events import BlobRef, Instance


def _item(study: str, n: int, stat: bool) -> OutboxItem:
    blob = BlobRef(uri=f"file:///b/{n}", sha256=f"{n:064x}", size=1, media_type="application/dicom")
    inst = Instance(instance_key=f"in-{n:016x}", source_format="dicom", view_position="PA", blob=blob, rows=1, columns=1)
    return OutboxItem(study, "pt-0000000000000001", inst, "CR", "dicom-cstore", stat=stat)


def test_due_gives_stat_studies_first_then_the_longest_waiting() -> None:
    clock = {"now": 0.0}
    outbox = InMemoryOutbox(clock=lambda: clock["now"])

    async def scenario() -> list[tuple[str, bool]]:
        for i, (key, stat) in enumerate([("st-routine-0001", False), ("st-routine-0002", False), ("st-stat-00000001", True),
                                          ("st-routine-0003", False)]):
            clock["now"] = float(i)
            await outbox.add(_item(key, i, stat))
        clock["now"] = 100.0
        first = await outbox.due(1.0, limit=2)
        rest = await outbox.due(1.0)
        return [(d.study_key, d.stat) for d in first + rest]

    order = asyncio.run(scenario())
    assert order == [("st-stat-00000001", True), ("st-routine-0001", False), ("st-routine-0002", False), ("st-routine-0003", False)]

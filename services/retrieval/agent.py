"""Retrieval stage adapter: ConceptsInferred -> CasesRetrieved from the pgvector case store."""

from __future__ import annotations

from radalign.config import Settings
from radalign.db import open_pool, pool_ready
from radalign.framework.faust_app import run_worker
from radalign.framework.retry import call_with_retry
from radalign.framework.stage import Output, Stage
from radalign.kb.store import CaseStore
from radalign.retrieval.core import RETRIEVAL_VERSION, build_cases_retrieved, retrieve
from schemas.events import ConceptsInferred
from schemas.topics import CASES_RETRIEVED


class RetrievalStage(Stage[ConceptsInferred]):
    name = "retrieval"
    concurrency = 2

    async def setup(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = await open_pool(settings)
        self.store = CaseStore(self.pool)

    async def close(self) -> None:
        await self.pool.close()

    async def ready(self) -> tuple[bool, str]:
        return await pool_ready(self.pool)

    async def handle(self, event: ConceptsInferred) -> list[Output]:
        cases = await call_with_retry(
            "postgres", lambda: retrieve(self.store, event, self.settings), self.settings, stage=self.name,
            timeout_s=self.settings.db_statement_timeout_ms / 1000 + 2,
        )
        return [Output(CASES_RETRIEVED, build_cases_retrieved(event, cases, RETRIEVAL_VERSION))]


def main(settings: Settings) -> None:
    run_worker(RetrievalStage(), settings)

"""The Faust adapter shared by every consuming stage: one app per stage, one agent per lane.

What it adds to `StageRunner`: consuming the routine and STAT topics as separate agents (a STAT
study never waits behind a routine backlog), no new routine record started while a STAT one is in
flight (`radalign.framework.lanes.StatFirst`), at-least-once delivery (an input offset is committed
only after its outputs were acknowledged by the broker: `send_and_wait` before the event is
acked), the stage's background tasks, and one web server: the probes and metrics every service
serves (`radalign.framework.http.probe_routes`), the stage's own routes, and its auth middleware.
Every stage runs here, the review service included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted

from radalign.config import Settings, csv_list
from radalign.framework.http import Probes, probe_routes
from radalign.framework.kafka_fetch import transport_with_fetch_wait
from radalign.framework.lanes import StatFirst
from radalign.framework.logredact import install_log_redaction
from radalign.framework.retry import retry_until_done
from radalign.framework.stage import BackgroundTask, Record, Stage, StageRunner
from schemas.events import Priority
from schemas.topics import TopicSpec

log = logging.getLogger("radalign.faust")

#: /health/live fails when the event loop has not ticked for this long (a blocked loop).
LOOP_STALL_S = 15.0


def broker_urls(bootstrap: str) -> str:
    return ";".join(f"kafka://{host}" for host in csv_list(bootstrap))


def create_app(stage: Stage[Any], settings: Settings) -> faust.App:
    # The app id is the stage's consumer group (k8s/ names the groups after it: keep it here).
    app = faust.App(f"radalign-{stage.name}", **_app_options(stage, settings))
    app.transport = transport_with_fetch_wait(app, settings.kafka_fetch_max_wait_ms)
    runner = StageRunner(stage, settings)
    lifecycle = _Lifecycle()
    _add_agents(app, stage, _consumer(app, runner, lifecycle))
    app.task(_setup_task(stage, settings, lifecycle))

    @app.timer(interval=1.0)
    async def _tick() -> None:
        lifecycle.last_tick = time.monotonic()

    for task in stage.background_tasks():
        app.task(_repeat(task, lifecycle.setup_done))

    # The stage's routes first: a route of its own at "/" (the review worklist) wins over Faust's index.
    for route in [*stage.routes(), *probe_routes(_probes(app, stage, lifecycle))]:
        app.web.web_app.router.add_route(route.method, route.path, route.handler)  # type: ignore[attr-defined]  # faust types app.web as the abstract Web; the aiohttp driver has web_app

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's signal stubs want a `signal` keyword it passes in **kwargs
    async def _close(app: faust.App, **kwargs: object) -> None:
        await stage.close()

    return app


def _app_options(stage: Stage[Any], settings: Settings) -> dict[str, Any]:
    """The `faust.App` settings every stage shares (the app id aside)."""
    datadir = settings.state_dir.resolve() / "faust" / stage.name
    datadir.mkdir(parents=True, exist_ok=True)
    return dict(
        broker=broker_urls(settings.kafka_bootstrap),
        broker_credentials=settings.faust_broker_credentials(),  # TLS / SASL from the settings
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_ms / 1000,
        broker_commit_every=1,  # commit soon after each ack: a restart re-reads little
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,  # topics are provisioned (stack up / k8s), never by workers
        topic_disable_leader=True,
        store="memory://",
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port(stage.name),
        web_in_thread=False,
        # Only /metrics and /health/* (and a stage's own routes): Faust's /router, /table, /graph
        # and statistics pages would show partitions, keys and table contents to anyone.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        stream_wait_empty=False,
        producer_acks=-1,
        # the stage's auth (bearer tokens, or the review app's session) in front of every route
        web_application_options={"middlewares": stage.middlewares(settings)},
    )


@dataclass
class _Lifecycle:
    """What the agents, tasks and probes of one app share: setup progress and the loop's last tick."""

    last_tick: float = field(default_factory=time.monotonic)
    ready: bool = False
    setup_error: str | None = None
    setup_done: asyncio.Event = field(default_factory=asyncio.Event)
    stat_first: StatFirst = field(default_factory=StatFirst)  # no new routine record starts while a STAT one is in flight


def _consumer(app: faust.App, runner: StageRunner, lifecycle: _Lifecycle) -> Callable[[faust.StreamT], Awaitable[None]]:
    """The agent body every lane runs: records through the runner, STAT first."""

    async def _run(stream: faust.StreamT) -> None:
        # Partitions can be assigned before the stage's clients are open: hold the first record
        # (unacked, so nothing is lost) until setup has finished.
        await lifecycle.setup_done.wait()
        async for event in stream.events():
            msg = event.message
            record = Record(
                topic=msg.topic,
                partition=msg.partition,
                offset=msg.offset,
                key=msg.key,
                value=msg.value,
                headers=list(msg.headers or []),
            )
            if TopicSpec.lane_of(msg.topic) == Priority.STAT:
                async with lifecycle.stat_first.stat():
                    await _process(record)
            else:
                await lifecycle.stat_first.routine_turn()
                await _process(record)

    async def _process(record: Record) -> None:
        for out in await runner.process(record):
            # Wait for the broker's ack before this event is acked (and its offset committed).
            await app.producer.send_and_wait(out.topic, out.key, out.value, partition=None, timestamp=None, headers=out.headers)

    return _run


def _add_agents(app: faust.App, stage: Stage[Any], run: Callable[[faust.StreamT], Awaitable[None]]) -> None:
    """One agent per input topic (each lane of each input is its own topic)."""
    for spec in stage.inputs:
        for topic_name in spec.names:
            lane = TopicSpec.lane_of(topic_name).value
            # The primary input's agents keep the short name; an extra input's carry its topic.
            agent_name = f"{stage.name}-{lane}" if spec == stage.inputs[0] else f"{stage.name}-{spec.name}-{lane}"
            topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw", allow_empty=True)
            app.agent(topic, name=agent_name, concurrency=stage.concurrency)(run)


def _setup_task(stage: Stage[Any], settings: Settings, lifecycle: _Lifecycle) -> Callable[[], Awaitable[None]]:
    """The app task opening the stage's clients; the agents and background tasks wait for it."""

    async def _setup() -> None:
        # A dependency that is down at start (database, Triton) is retried with backoff rather
        # than crashing the worker; readiness says why it is not ready meanwhile.
        def _failed(exc: BaseException) -> None:
            lifecycle.setup_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("stage %s setup failed (%s); retrying", stage.name, lifecycle.setup_error)

        await retry_until_done(f"{stage.name} setup", lambda: stage.setup(settings), settings, on_failure=_failed)
        lifecycle.ready, lifecycle.setup_error = True, None
        lifecycle.setup_done.set()
        log.info("stage %s ready", stage.name)

    return _setup


def _probes(app: faust.App, stage: Stage[Any], lifecycle: _Lifecycle) -> Probes:
    """Liveness (the loop ticks), readiness (partitions assigned and the stage's dependencies up)."""

    async def live() -> tuple[bool, dict[str, object]]:
        stalled = time.monotonic() - lifecycle.last_tick
        return stalled < LOOP_STALL_S, {"status": "ok" if stalled < LOOP_STALL_S else "stalled", "loop_lag_s": round(stalled, 3)}

    async def ready() -> tuple[bool, dict[str, object]]:
        try:
            assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
        except ConsumerNotStarted:  # before the worker joined its group: not ready, not an error
            assigned = []
        deps_ok, detail = (await stage.ready()) if lifecycle.ready else (False, f"starting: {lifecycle.setup_error or 'setup'}")
        ok = bool(assigned) and deps_ok
        return ok, {"status": "ready" if ok else "not ready", "partitions": assigned, "dependencies": detail}

    async def before_scrape() -> None:
        if lifecycle.ready:
            await stage.before_scrape()

    return Probes(live, ready, before_scrape)


def _repeat(task: BackgroundTask, setup_done: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """An app task running `task` every `task.every_s` seconds after setup; a failure is logged
    and retried next round (the worker's shutdown cancels it)."""

    async def loop() -> None:
        await setup_done.wait()
        while True:
            try:
                await task.run()
            except Exception:
                log.exception("background task %s failed; retrying in %.0f s", task.name, task.every_s)
            await asyncio.sleep(task.every_s)

    loop.__name__ = loop.__qualname__ = f"background-{task.name}"  # faust names tasks by function
    return loop


def run_worker(stage: Stage[Any], settings: Settings) -> None:
    """Run one stage until SIGTERM (what `radalign worker <stage>` does)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    app = create_app(stage, settings)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), redirect_stdouts=False)
    worker.execute_from_commandline()


__all__ = ["create_app", "run_worker"]

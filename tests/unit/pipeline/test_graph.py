"""The stage graph: every declared stage has an importable adapter and a unique port; every input
is written by a stage declared before it (read from the declaration itself, not from a list
derived from it); and the checker that runs at import rejects a graph that breaks these rules."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from radalign.config import Settings
from radalign.pipeline import ALL_TOPICS, GRAPH, STAGES, GraphError, check_graph, stage_spec
from schemas.topics import CASES_RETRIEVED, CONCEPTS_INFERRED, STUDY_PREPROCESSED


@pytest.mark.parametrize("spec", GRAPH, ids=lambda s: s.name)
def test_every_stage_has_an_adapter_with_main(spec):
    module = importlib.import_module(spec.adapter)
    assert callable(getattr(module, "main", None)), f"{spec.adapter} has no main(settings)"


def test_ports_are_unique_and_settings_derive_from_the_graph():
    ports = [s.web_port for s in GRAPH]
    assert len(ports) == len(set(ports))
    settings = Settings(web_port_offset=7)
    assert settings.web_port("concepts") == stage_spec("concepts").web_port + 7
    assert settings.web_port("gateway") == settings.gateway_port


@pytest.mark.parametrize("index", range(len(GRAPH)), ids=lambda i: GRAPH[i].name)
def test_each_input_is_written_by_an_earlier_stage(index):
    spec = GRAPH[index]
    earlier = {t.name for s in GRAPH[:index] for t in s.outputs}
    for topic in spec.inputs:
        assert topic.name in earlier, f"{spec.name} reads {topic.name}, which no stage before it writes"


def test_the_graph_has_one_source_and_every_other_stage_consumes():
    assert [s.name for s in GRAPH if not s.consumes] == ["gateway"]
    assert GRAPH[0].name == "gateway", "the source comes first: everything else reads what it wrote"


def _replace(name: str, **changes) -> tuple:
    return tuple(dataclasses.replace(s, **changes) if s.name == name else s for s in GRAPH)


def test_the_checker_rejects_an_input_nobody_writes():
    orphan = _replace("retrieval", input=CASES_RETRIEVED)  # retrieval's own output as its input
    with pytest.raises(GraphError, match="retrieval reads radalign.study.retrieved.v1, written only by retrieval"):
        check_graph(orphan)
    no_writer = _replace("concepts", outputs=())  # nothing writes what retrieval reads
    with pytest.raises(GraphError, match=f"retrieval reads {CONCEPTS_INFERRED.name}, written by no stage"):
        check_graph(no_writer)


def test_the_checker_rejects_a_producer_declared_later():
    concepts, retrieval = stage_spec("concepts"), stage_spec("retrieval")
    swapped = tuple(retrieval if s is concepts else concepts if s is retrieval else s for s in GRAPH)
    with pytest.raises(GraphError, match="declared later"):
        check_graph(swapped)


def test_the_checker_rejects_duplicate_names_ports_and_writers():
    with pytest.raises(GraphError, match="declared twice"):
        check_graph((*GRAPH, stage_spec("delivery")))
    with pytest.raises(GraphError, match="writes radalign.study.preprocessed.v1, which preprocess writes already"):
        check_graph(_replace("concepts", outputs=(STUDY_PREPROCESSED,)))


def test_the_declared_graph_passes_the_checker():
    check_graph(GRAPH)


def test_every_output_and_dead_letter_topic_is_provisioned():
    provisioned = {t.name for t in ALL_TOPICS}
    for spec in GRAPH:
        assert {t.name for t in spec.outputs} <= provisioned
        assert spec.dead_letters.name in provisioned
    assert len(STAGES) == len(set(STAGES))

"""The stage graph: every declared stage has an importable adapter, a unique port, and an input
written by a stage declared before it."""

from __future__ import annotations

import importlib

import pytest

from radalign.config import Settings
from radalign.pipeline import ALL_TOPICS, GRAPH, STAGES, stage_spec


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


def test_every_output_and_dead_letter_topic_is_provisioned():
    provisioned = {t.name for t in ALL_TOPICS}
    for spec in GRAPH:
        assert {t.name for t in spec.outputs} <= provisioned
        assert spec.dead_letters.name in provisioned
    assert len(STAGES) == len(set(STAGES))

"""Decompression bombs and oversize inputs (issue 12): each case of the generated corpus gets its
documented answer at the gateway and in preprocess, in a subprocess whose address space is capped
at the stage's pod memory limit, with its peak resident memory far below that limit."""

from __future__ import annotations

import pytest

from radalign.testing.bombs import POD_LIMIT_MB, bomb_corpus, probe

CASES = {case.name: case for case in bomb_corpus()}
#: Peak resident memory allowed in a probe (the interpreter with pydicom, numpy and Pillow is ~80 MB).
PEAK_MB = 300


@pytest.mark.parametrize("name", sorted(CASES))
def test_bomb_is_refused_or_decoded_within_memory(name: str) -> None:
    case = CASES[name]
    gateway, preprocess = probe(case, "gateway"), probe(case, "preprocess")
    assert gateway["outcome"] == case.gateway, gateway
    assert preprocess["outcome"] == case.preprocess, preprocess
    for stage, result in (("gateway", gateway), ("preprocess", preprocess)):
        assert result["peak_rss_mb"] < min(PEAK_MB, POD_LIMIT_MB[stage]), (stage, result)

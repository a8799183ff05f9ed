"""Settings whose values form a fixed set refuse anything else when they load, not on first use."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from radalign.config import Settings


@pytest.mark.parametrize(
    ("field", "accepted", "refused"),
    [
        ("llm_backend", ["auto", "openai", "llama-cpp", "deterministic"], "llamacpp"),
        ("llm_prompt_form", ["chat", "completion"], "few-shot"),
        ("log_level", ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], "info"),
    ],
)
def test_a_fixed_set_setting_accepts_its_values_and_refuses_others(field, accepted, refused, monkeypatch):
    # the values the README and the k8s overlays use, written out here rather than read from Settings
    for value in accepted:
        assert getattr(Settings.model_validate({field: value}), field) == value
    monkeypatch.setenv(f"RADALIGN_{field.upper()}", refused)
    with pytest.raises(ValidationError, match=field):
        Settings()

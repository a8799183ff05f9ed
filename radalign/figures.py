"""Writing evaluation figures: one JSON file per run, beside the table the command prints."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_figures(figures: Mapping[str, Any], path: str | Path) -> Path:
    """`figures` as indented JSON at `path` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    return path

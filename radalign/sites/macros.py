"""Each site's normal report macro: `<sites_dir>/<site>/normal_macro.json`, {"findings": ...,
"impression": ...}, the provider's own wording of a normal chest film. A site artifact beside its
site model (`radalign sites macro` writes it); drafting reads it: a likely-normal film's draft is
its site's macro (the phrase table's default where the site has none)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
MACRO_FILE = "normal_macro.json"


@dataclass(frozen=True)
class NormalMacro:
    """A provider's normal report: what a likely-normal film's draft says."""

    findings: str
    impression: str


def load_normal_macros(sites_dir: str | Path) -> dict[str, NormalMacro]:
    """Site -> macro for every site folder that has a readable one (a broken file is logged and skipped)."""
    out = {}
    for path in sorted(Path(sites_dir).glob(f"*/{MACRO_FILE}")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            out[path.parent.name] = NormalMacro(str(raw["findings"]).strip(), str(raw["impression"]).strip())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("normal macro of site %s not loaded: %s", path.parent.name, exc)
    return out


def save_normal_macro(sites_dir: str | Path, site: str, macro: NormalMacro) -> Path:
    from radalign.concepts.gate import profile_path

    path = profile_path(sites_dir, site).with_suffix("") / MACRO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"findings": macro.findings, "impression": macro.impression}, indent=2), encoding="utf-8")
    return path

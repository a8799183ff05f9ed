"""The site-model registry: which head Triton serves for each site (live), which one runs in
shadow, and the record of every promotion and rollback (who, when, figures).

Layout (a folder Triton and the CLI share; a PVC or a synced bucket in production):
    <dir>/<site>/heads/<version>.pt     TorchScript site head + its gate, policy and summary
    <dir>/<site>/heads/<version>.json   the model card's figures (.md beside it)
    <dir>/<site>/registry.json          {"live": version|null, "shadow": version|null, "events": [...]}
Triton's concept model re-reads `registry.json` when it changes (`triton_models/concept_model`),
so loading, promoting or rolling back needs no restart. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radalign.concepts.gate import profile_path

REGISTRY_FILE = "registry.json"
SHIPPED_DIR = Path(__file__).with_name("shipped")


class PromotionRefused(RuntimeError):
    """The candidate did not pass its gate on the site's held-out patients."""


@dataclass
class SiteState:
    site: str
    live: str | None = None
    shadow: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, "live": self.live, "shadow": self.shadow, "events": self.events}


class SiteRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def site_dir(self, site: str) -> Path:
        return profile_path(self.root, site).with_suffix("")  # validates the name: it becomes a folder

    def heads_dir(self, site: str) -> Path:
        return self.site_dir(site) / "heads"

    def head_path(self, site: str, version: str) -> Path:
        path = self.heads_dir(site) / f"{version}.pt"
        if path.parent.resolve() != self.heads_dir(site).resolve() or not path.is_file():
            raise FileNotFoundError(f"site {site!r} has no head {version!r}")
        return path

    def sites(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob(f"*/{REGISTRY_FILE}"))

    def state(self, site: str) -> SiteState:
        path = self.site_dir(site) / REGISTRY_FILE
        if not path.is_file():
            return SiteState(site)
        raw = json.loads(path.read_text())
        return SiteState(site, raw.get("live"), raw.get("shadow"), list(raw.get("events", [])))

    def _write(self, state: SiteState) -> None:
        path = self.site_dir(state.site) / REGISTRY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{REGISTRY_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state.to_dict(), indent=2))
        tmp.replace(path)

    def card(self, site: str, version: str) -> dict[str, Any]:
        path = self.heads_dir(site) / f"{version}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _record(self, state: SiteState, action: str, version: str | None, by: str, **extra: Any) -> None:
        summary = self.card(state.site, version).get("summary", {}) if version else {}
        state.events.append({"action": action, "version": version, "by": by, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                             "figures": summary, **extra})

    def add_candidate(self, site: str, head: str | Path, by: str) -> str:
        """Copy a trained head (and its card files) in and run it in shadow; returns its version."""
        head = Path(head)
        version = head.stem
        target = self.heads_dir(site)
        target.mkdir(parents=True, exist_ok=True)
        for suffix in (".pt", ".json", ".md"):
            src = head.with_suffix(suffix)
            if src.is_file() and src.resolve() != (target / src.name).resolve():
                shutil.copyfile(src, target / src.name)
        state = self.state(site)
        state.shadow = version
        self._record(state, "shadow", version, by)
        self._write(state)
        return version

    def promote(self, site: str, version: str | None, by: str) -> SiteState:
        """Make `version` (default: the shadow candidate) live; refused unless it passed its gate."""
        state = self.state(site)
        version = version or state.shadow
        if not version:
            raise PromotionRefused(f"site {site!r} has no candidate in shadow")
        self.head_path(site, version)
        summary = self.card(site, version).get("summary", {})
        if not summary.get("passed_gate"):
            raise PromotionRefused(f"{version} assesses nothing on {site}'s validation patients (see its model card): not promoted")
        previous = state.live
        state.live = version
        if state.shadow == version:
            state.shadow = None
        self._record(state, "promote", version, by, replaced=previous)
        self._write(state)
        return state

    def rollback(self, site: str, by: str) -> SiteState:
        """Back to the version the last promotion replaced (none: the generic model serves)."""
        state = self.state(site)
        # the promotion that made the live version live (a rollback never rolls forward again)
        promotions = [e for e in state.events if e["action"] == "promote" and e.get("version") == state.live]
        if state.live is None or not promotions:
            raise PromotionRefused(f"site {site!r} has no promoted model to roll back")
        previous = promotions[-1].get("replaced")
        self._record(state, "rollback", previous, by, replaced=state.live)
        state.live = previous
        self._write(state)
        return state

    def seed_shipped(self, by: str = "shipped") -> list[str]:
        """Register and promote the site models that ship with the project, for each site the
        registry does not know yet (a provider's own history is never overwritten)."""
        seeded = []
        for head in sorted(SHIPPED_DIR.glob("*/*.pt")):
            site = head.parent.name
            if (self.site_dir(site) / REGISTRY_FILE).is_file():
                continue
            self.add_candidate(site, head, by)
            self.promote(site, head.stem, by)
            seeded.append(site)
        return seeded


def live_head(root: str | Path, site: str) -> Path | None:
    """The live head file of a site in `root`, else the shipped one, else None (generic model)."""
    registry = SiteRegistry(root)
    state = registry.state(site)
    if state.live:
        return registry.head_path(site, state.live)
    shipped = sorted((SHIPPED_DIR / site).glob("*.pt")) if (SHIPPED_DIR / site).is_dir() else []
    return shipped[-1] if shipped and not (registry.site_dir(site) / REGISTRY_FILE).is_file() else None


def seeded_registry(root: str | Path) -> Path:
    """`root`, with the shipped site models registered for the sites it does not know yet."""
    SiteRegistry(root).seed_shipped()
    return Path(root)

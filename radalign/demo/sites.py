"""The demo's site model in shadow: the demo's HTTP uploads come from one site, and the shipped
`nih-cxr800` site model runs beside the live model for that site. The drafts stay the live
model's; at the end the demo prints what `radalign sites compare` and the drift metrics say about
the candidate on this real traffic (children's films: the adult NIH model should abstain)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from radalign.config import Settings
from radalign.sites.registry import SHIPPED_DIR, SiteRegistry

DEMO_SITE = "DEMO-CLINIC"
CANDIDATE_SITE = "nih-cxr800"  # the shipped site model the demo runs in shadow


def prepare(settings: Settings) -> Settings:
    """HTTP uploads from DEMO_SITE (unless the environment configures issuers) and the shipped
    site model in shadow for it (once: a re-run keeps the registry as it is)."""
    if settings.patient_issuers.strip():
        return settings
    registry = SiteRegistry(settings.sites_dir)
    head = sorted((SHIPPED_DIR / CANDIDATE_SITE).glob("*.pt"))[-1]
    if registry.state(DEMO_SITE).shadow != head.stem:
        registry.add_candidate(DEMO_SITE, head, by="demo")
    return settings.model_copy(update={"patient_issuers": f"http={DEMO_SITE}"})


def shadow_summary(settings: Settings) -> str:
    """The candidate against the live model on the demo's studies, and the site's drift counters."""
    from radalign.db import open_pool
    from radalign.sites.shadow import compare

    version = SiteRegistry(settings.sites_dir).state(DEMO_SITE).shadow
    if not version:
        return "site model: none in shadow (RADALIGN_PATIENT_ISSUERS is set: the demo leaves your sites alone)"

    async def figures() -> dict[str, Any]:
        pool = await open_pool(settings, name="radalign-demo")
        try:
            return await compare(pool, DEMO_SITE, version)
        finally:
            await pool.close()

    result = asyncio.run(figures())
    lines = [f"site {DEMO_SITE}: candidate {version} in shadow on {result['studies']} studies (never drafted): "
             f"it abstained on {result.get('candidate_ood_rate', 0):.0%}, the live model claimed nothing on {result.get('live_nothing_claimed_rate', 0):.0%}"]
    for obs, row in result["observations"].items():
        if row["agreement"] is not None:
            lines.append(f"  {obs}: same claim {row['agreement']:.0%} of {row['claimed_by_either']} films either model claimed")
    try:
        body = httpx.get(f"http://127.0.0.1:{settings.web_port('concepts')}/metrics", timeout=5).text
        counts = re.findall(rf'radalign_site_films_total{{[^}}]*site="{DEMO_SITE}"[^}}]*}} ([0-9.e+]+)', body)
        lines.append(f"  drift metric radalign_site_films_total{{site=\"{DEMO_SITE}\"}}: {sum(float(c) for c in counts):.0f} films")
    except httpx.HTTPError:
        pass
    return "\n".join(lines)

"""The signed report's status lifecycle (pure): who may sign what, and what status it gets.

    no signed version  --resident signs-->   preliminary (v1)  --resident re-signs--> preliminary (v2)
                       --attending signs-->  final (v1)
    preliminary        --attending signs-->  final (co-signature; replaces the preliminary version)
    final / amended /  --attending changes-> amended (default) or corrected (a correction of an error)
    corrected          --resident-->         refused: only an attending changes a released report

Every signature is a new version (1, 2, 3 ...) linked to the version it replaces; nothing is
overwritten (PostgreSQL `report_finals`, one row per version). The statuses are FHIR's
DiagnosticReport.status codes; the delivery maps them to DICOM SR flags and HL7 OBR-25 / OBX-11
(`HL7_RESULT_STATUS`): P preliminary, F final, C corrected/amended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from schemas.events import ReviewRole

SignedStatus = Literal["preliminary", "final", "amended", "corrected"]
ChangeKind = Literal["amended", "corrected"]
#: Statuses of a released (attending-signed) report: a later change amends or corrects it.
RELEASED: frozenset[str] = frozenset({"final", "amended", "corrected"})
#: HL7 v2 Table 0123 result status (OBR-25) and Table 0085 (OBX-11) per FHIR status.
HL7_RESULT_STATUS: dict[str, str] = {"preliminary": "P", "final": "F", "amended": "C", "corrected": "C"}


class LifecycleError(ValueError):
    """This signer may not sign this study now (a resident after release, an unknown change kind)."""


@dataclass(frozen=True)
class Transition:
    status: SignedStatus
    version: int
    #: The version this one replaces (None for the first signature).
    replaces_version: int | None


def next_transition(
    history: Sequence[tuple[int, str]], role: ReviewRole, *, change: ChangeKind = "amended",
) -> Transition:
    """The status and version of a new signature, given the study's signed versions
    (`history`: (version, status) pairs, any order) and the signer's role."""
    if change not in ("amended", "corrected"):
        raise LifecycleError(f"unknown kind of change {change!r} (amended or corrected)")
    latest = max(history, default=None)
    version = 1 if latest is None else latest[0] + 1
    replaces = None if latest is None else latest[0]
    released = any(status in RELEASED for _, status in history)
    if role == ReviewRole.RESIDENT:
        if released:
            raise LifecycleError("the report was released by an attending; only an attending can amend or correct it")
        return Transition("preliminary", version, replaces)
    if not released:
        return Transition("final", version, replaces)  # a first signature, or the co-signature of a preliminary
    return Transition(change, version, replaces)


def is_cosignature(history: Sequence[tuple[int, str]], status: str) -> bool:
    """A final version that releases a resident's preliminary one."""
    latest = max(history, default=None)
    return status == "final" and latest is not None and latest[1] == "preliminary"

"""Agreement of the labeler with the IU reports' manual MeSH indexing.

The IU collection has no CheXpert labels, but each report carries manual MeSH "problems"
(`IUReport.mesh_major`, e.g. "Cardiomegaly/mild", "Opacity/lung/base/left"). For the observations
whose MeSH terms map cleanly we compare "labeler says positive" with "MeSH indexes the finding",
per target: precision, recall, F1 (and the same with uncertain labels counted as positive).

Reports indexed "No Indexing" (not indexed at all) and reports without text are left out.
The reports are split deterministically by a hash of their uid into a dev half (the rules were
tuned on it) and a held-out half (only measured): the held-out figures are the honest ones.

MeSH indexes each finding on its own (atelectasis without "opacity"), so the labels are compared
before CheXpert's hierarchy lifts Lung Opacity from its children (`hierarchy=False`): the table
measures the rules, not the hierarchy. Micro F1 pools the five observations with a goal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from radalign.labeler.engine import Mention, aggregate_mentions, find_mentions
from radalign.labeler.iu import IUReport
from schemas.events import Certainty, Observation

Split = Literal["dev", "heldout", "all"]

_NOT_LUNG = frozenset(
    {"ribs", "thoracic vertebrae", "adipose tissue", "heart", "mediastinum", "supracardiac", "breast",
     "clavicle", "sternum", "mitral valve", "paratracheal", "pleura", "pleural sinus", "diaphragm",
     "humerus", "thorax", "shoulder", "abdomen", "spine"}
)
_DEVICE_TERMS = (
    "Catheters, Indwelling", "Implanted Medical Device", "Surgical Instruments", "Tube, Inserted",
    "Medical Device", "Stents", "Pacemaker, Artificial", "Prostheses and Implants", "Heart Valve Prosthesis",
)


def _parts(term: str) -> tuple[str, tuple[str, ...]]:
    head, *qualifiers = [p.strip() for p in term.split("/")]
    return head, tuple(q.lower() for q in qualifiers)


def _lung_finding(term: str, heads: Iterable[str]) -> bool:
    """A term with one of `heads` whose qualifiers do not place it outside the lung."""
    head, qualifiers = _parts(term)
    return head in heads and not (_NOT_LUNG & set(qualifiers))


@dataclass(frozen=True)
class Target:
    """One comparison: which labeler observations count, and which MeSH terms count."""

    name: str
    observations: frozenset[Observation]
    mesh_match: Callable[[str], bool] = field(repr=False)
    goal_f1: float | None = None  # the F1 the brief asks for, where the mapping holds


def _heads(*names: str) -> Callable[[str], bool]:
    wanted = frozenset(names)
    return lambda term: _parts(term)[0] in wanted


_OPACITY_HEADS = ("Opacity", "Airspace Disease", "Consolidation", "Pneumonia", "Infiltrate", "Density")


def _opacity_family(term: str) -> bool:
    """CheXpert's Lung Opacity covers interstitial markings and patterns, which MeSH indexes apart."""
    head, qualifiers = _parts(term)
    if head in ("Markings", "Thickening") and "interstitial" in qualifiers:
        return True
    return head == "Lung Diseases, Interstitial" or _lung_finding(term, _OPACITY_HEADS)

def _lung_lesion(term: str) -> bool:
    """Nodules and masses; MeSH indexes a "nodular opacity/density" as Opacity or Density with "round"."""
    head, qualifiers = _parts(term)
    if head in ("Nodule", "Mass"):
        return True
    return "round" in qualifiers and _lung_finding(term, ("Opacity", "Density", "Infiltrate"))


#: MeSH term -> observation mapping, for the observations that map cleanly.
TARGETS: tuple[Target, ...] = (
    Target(
        "Cardiomegaly",
        frozenset({Observation.CARDIOMEGALY}),
        lambda t: _parts(t)[0] == "Cardiomegaly" or t.startswith("Cardiac Shadow/enlarged"),
        0.90,
    ),
    Target(
        "Pleural Effusion",
        frozenset({Observation.PLEURAL_EFFUSION}),
        _heads("Pleural Effusion", "Hydropneumothorax", "Hemothorax", "Hemopneumothorax"),
        0.90,
    ),
    Target(
        "Pneumothorax",
        frozenset({Observation.PNEUMOTHORAX}),
        _heads("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"),
        0.90,
    ),
    Target(
        "Edema",
        frozenset({Observation.EDEMA}),
        # CheXpert's Edema includes vascular congestion and heart failure mentions.
        _heads("Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"),
        0.90,
    ),
    Target(
        "Lung Opacity family",  # Lung Opacity | Consolidation | Pneumonia
        frozenset({Observation.LUNG_OPACITY, Observation.CONSOLIDATION, Observation.PNEUMONIA}),
        _opacity_family,
        0.90,
    ),
    Target("Consolidation", frozenset({Observation.CONSOLIDATION}), _heads("Consolidation")),
    Target("Pneumonia", frozenset({Observation.PNEUMONIA}), _heads("Pneumonia")),
    Target("Atelectasis", frozenset({Observation.ATELECTASIS}), _heads("Pulmonary Atelectasis")),
    Target("Lung Lesion", frozenset({Observation.LUNG_LESION}), _lung_lesion),
    Target("Fracture", frozenset({Observation.FRACTURE}), _heads("Fractures, Bone")),
    Target("Pleural Other", frozenset({Observation.PLEURAL_OTHER}), lambda t: t.startswith("Thickening/pleura")),
    # Abdominal devices (cholecystectomy clips, gastric bands) are not the chest's support devices
    # (issue 11); MeSH indexes them with an "abdomen" qualifier.
    Target(
        "Support Devices",
        frozenset({Observation.SUPPORT_DEVICES}),
        lambda t: _parts(t)[0] in _DEVICE_TERMS and "abdomen" not in _parts(t)[1],
    ),
    Target("No Finding", frozenset({Observation.NO_FINDING}), lambda t: t.lower() == "normal"),
)


def split_of(uid: str) -> Literal["dev", "heldout"]:
    """Deterministic half of a report: the parity of the first byte of sha256(uid)."""
    return "dev" if hashlib.sha256(uid.encode()).digest()[0] % 2 == 0 else "heldout"


def evaluable(report: IUReport) -> bool:
    """Reports with text and with MeSH indexing (not "No Indexing")."""
    return bool(report.text.strip()) and "No Indexing" not in report.mesh_major


def select(reports: Sequence[IUReport], split: Split) -> list[IUReport]:
    return [r for r in reports if evaluable(r) and (split == "all" or split_of(r.uid) == split)]


@dataclass
class Score:
    name: str
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tp_lenient: int = 0  # uncertain counted as positive
    fp_lenient: int = 0
    fn_lenient: int = 0
    goal_f1: float | None = None

    @staticmethod
    def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return self._f1(self.tp, self.fp, self.fn)[0]

    @property
    def recall(self) -> float:
        return self._f1(self.tp, self.fp, self.fn)[1]

    @property
    def f1(self) -> float:
        return self._f1(self.tp, self.fp, self.fn)[2]

    @property
    def f1_lenient(self) -> float:
        return self._f1(self.tp_lenient, self.fp_lenient, self.fn_lenient)[2]


@dataclass(frozen=True)
class Disagreement:
    uid: str
    target: str
    kind: Literal["false_positive", "false_negative"]
    mesh_terms: tuple[str, ...]
    mentions: tuple[Mention, ...]  # the labeler's mentions of the target's observations


@dataclass
class Agreement:
    split: Split
    n_reports: int
    scores: dict[str, Score]
    disagreements: list[Disagreement]

    def micro(self, names: Iterable[str] | None = None) -> Score:
        """The pooled counts of `names` (default: the targets with a goal, the five major ones)."""
        chosen = [s for s in self.scores.values() if (s.name in names if names is not None else s.goal_f1 is not None)]
        pooled = Score("micro (goal targets)" if names is None else "micro")
        for s in chosen:
            for attr in ("tp", "fp", "fn", "tp_lenient", "fp_lenient", "fn_lenient"):
                setattr(pooled, attr, getattr(pooled, attr) + getattr(s, attr))
        return pooled


def evaluate(reports: Sequence[IUReport], split: Split = "heldout", targets: Sequence[Target] = TARGETS) -> Agreement:
    """Score the labeler against MeSH on one split of `reports`."""
    chosen = select(reports, split)
    scores = {t.name: Score(t.name, goal_f1=t.goal_f1) for t in targets}
    disagreements: list[Disagreement] = []
    for report in chosen:
        mentions = find_mentions(report.text)
        labels = aggregate_mentions(mentions, hierarchy=False)
        for target in targets:
            certainties = [labels.get(o) for o in target.observations]
            predicted = Certainty.PRESENT in certainties
            predicted_lenient = predicted or Certainty.UNCERTAIN in certainties
            matched = tuple(t for t in report.mesh_major if target.mesh_match(t))
            truth = bool(matched)
            score = scores[target.name]
            score.tp += predicted and truth
            score.fp += predicted and not truth
            score.fn += truth and not predicted
            score.tp_lenient += predicted_lenient and truth
            score.fp_lenient += predicted_lenient and not truth
            score.fn_lenient += truth and not predicted_lenient
            if predicted != truth:
                disagreements.append(
                    Disagreement(
                        report.uid,
                        target.name,
                        "false_positive" if predicted else "false_negative",
                        report.mesh_major,
                        tuple(m for m in mentions if m.observation in target.observations),
                    )
                )
    return Agreement(split, len(chosen), scores, disagreements)


def format_table(agreement: Agreement) -> str:
    """The agreement as a fixed-width text table."""
    lines = [
        f"split={agreement.split} reports={agreement.n_reports}",
        f"{'target':<22}{'support':>8}{'P':>7}{'R':>7}{'F1':>7}{'F1(unc=pos)':>13}{'goal':>7}",
    ]
    for s in [*agreement.scores.values(), agreement.micro()]:
        goal = f"{s.goal_f1:.2f}" if s.goal_f1 is not None else "-"
        lines.append(
            f"{s.name:<22}{s.support:>8}{s.precision:>7.3f}{s.recall:>7.3f}{s.f1:>7.3f}{s.f1_lenient:>13.3f}{goal:>7}"
        )
    return "\n".join(lines)

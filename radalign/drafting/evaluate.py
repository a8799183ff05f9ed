"""`radalign eval reports`: drafts against reference reports (or labels), beside baselines, in one run.

Sets:
- `iu` (reports): the IU reports that ship in the torchxrayvision wheel, split in halves by a hash
  of the uid (`radalign.labeler.evaluate.split_of`): the *dev* half was used to write the phrase
  table and the labeler rules and serves as the case store of the retrieval baseline; the
  *held-out* half is only measured. IU publishes one report per patient, so a study's own report
  is never retrievable (the halves are disjoint).
- `nih-cxr800` (images with labels, no reports): the test split of the concept data code's
  patient-level split (`radalign.concepts_training.data.patient_split`, seed 0, 70/15/15), the split the
  concept model never trains or selects on.

Modes (where the concepts come from):
- `oracle`: the reference's own labels (the labeler's reading of an IU report, the NIH labels of
  a film): the drafting error alone;
- `predicted`: the concept model on the images (end to end; nih-cxr800), with its assessed set;
- `labels-only`: for sets with labels but no reports (nih-cxr800): oracle concepts, scored at
  label level only.

Systems, in the same run and table: the structured draft (the product), the fixed normal
template, and the top-1 retrieved report copied verbatim (the case store's best match by label
agreement with the concepts, what retrieval's re-ranking does; ties broken by a seeded hash).
In `predicted` mode the concept model's own states are a row too: the drafter must lose nothing.

Figures: CheXpert-label precision / recall / F1 from the project's labeler (present = positive),
micro and macro over the 14 observations, the 13 without No Finding, the 5 competition
observations, and those 5 plus No Finding, with bootstrap 95 % intervals for micro F1;
BLEU-1..4, ROUGE-L, CIDEr (pycocoevalcap) and METEOR where Java runs; grounding rates (drafts
with an unsupported positive claim, a claim about a non-assessed observation, an unsupported
laterality/location or comparison/temporal word, or an omitted assessed-present finding).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext, ExampleCase
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.drafting.phrases import load_phrase_table
from radalign.drafting.sanitise import unsafe_words
from radalign.drafting.text import split_sentences
from schemas.events import Certainty, ConceptScore, Labels, Observation, OutOfDistribution

log = logging.getLogger(__name__)

ALL_14 = tuple(Observation)
WITHOUT_NO_FINDING = tuple(o for o in Observation if o is not Observation.NO_FINDING)
COMPETITION_5 = (
    Observation.ATELECTASIS, Observation.CARDIOMEGALY, Observation.CONSOLIDATION, Observation.EDEMA, Observation.PLEURAL_EFFUSION,
)
OBSERVATION_SETS: dict[str, tuple[Observation, ...]] = {
    "14": ALL_14,
    "13 (no NF)": WITHOUT_NO_FINDING,
    "5": COMPETITION_5,
    "5+NF": (*COMPETITION_5, Observation.NO_FINDING),
}
#: Concept probabilities that stand for oracle states (inside the default bands, far from the
#: thresholds: the drafting error alone).
ORACLE_PROBABILITY = {Certainty.PRESENT: 0.95, Certainty.UNCERTAIN: 0.55, Certainty.ABSENT: 0.03}
DRAFT = "structured draft"
TEMPLATE = "normal template"
RETRIEVED = "retrieved top-1"
MODEL = "concept model states"


@dataclass(frozen=True)
class Study:
    """One evaluated study: its reference, its concepts (the drafter's input), its patient."""

    key: str
    patient: str
    reference_labels: dict[Observation, Certainty | None]  # None: the reference says nothing (unknown)
    concepts: tuple[ConceptScore, ...]
    reference: tuple[str, str] | None = None  # (findings, impression) where the set has reports
    ood: OutOfDistribution | None = None

    @property
    def prediction(self) -> Prediction:
        return Prediction.from_scores(self.concepts, ood=self.ood)


@dataclass(frozen=True)
class KnowledgeCase:
    key: str
    patient: str
    findings: str
    impression: str
    labels: dict[Observation, Certainty]


# -- sets -----------------------------------------------------------------------------------------


def oracle_concepts(labels: Labels, *, unmentioned: Certainty | None = Certainty.ABSENT) -> tuple[ConceptScore, ...]:
    """Concepts from reference labels; `unmentioned` observations get that state (None: not assessed)."""
    out = []
    for o in Observation:
        state = labels.get(o, unmentioned)
        if state is not None:
            out.append(ConceptScore(observation=o, probability=ORACLE_PROBABILITY[state], state=state, present_threshold=0.6, absent_threshold=0.4))
    return tuple(out)


def iu_sets(labeler: ReportLabeler) -> tuple[list[Study], list[KnowledgeCase], list[Study]]:
    """(held-out studies, dev-half knowledge base, dev studies) of the IU reports, oracle concepts."""
    from radalign.labeler import load_iu_reports
    from radalign.labeler.evaluate import split_of

    held_out: list[Study] = []
    dev: list[Study] = []
    kb: list[KnowledgeCase] = []
    for report in load_iu_reports():
        if not report.findings or not report.impression:
            continue
        labels = dict(labeler.sections(report.findings, report.impression))
        # IU publishes one report per patient: the report is its own patient.
        study = Study(
            key=f"iu-{report.uid}", patient=f"iu:{report.uid}", reference_labels={o: labels.get(o, Certainty.ABSENT) for o in Observation},
            concepts=oracle_concepts(labels), reference=(report.findings, report.impression),
        )
        if split_of(report.uid) == "dev":
            dev.append(study)
            kb.append(KnowledgeCase(study.key, study.patient, report.findings, report.impression, labels))
        else:
            held_out.append(study)
    return held_out, kb, dev


def nih_records(data_dir: Path) -> list[Any]:
    """nih-cxr800 as concept-data records (image, patient, labels: 1 / 0 / NaN for blank)."""
    from radalign.concepts_training.data import read_manifest

    manifest = Path(data_dir) / "metadata.csv"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found (nih-cxr800 lives in ../shared/data/nih-cxr800)")
    # metadata.csv names its image column `image_file`: write the manifest the data code reads.
    out = Path(".radalign/eval/nih-cxr800.manifest.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open(newline="", encoding="utf-8") as fh, out.open("w", newline="", encoding="utf-8") as dst:
        rows = list(csv.DictReader(fh))
        names = [o.value for o in Observation]
        writer = csv.DictWriter(dst, fieldnames=["image", "patient_id", "source", *names])
        writer.writeheader()
        for row in rows:
            writer.writerow({"image": str((Path(data_dir) / row["image_file"]).resolve()), "patient_id": row["patient_id"],
                             "source": "nih-cxr800", **{n: row[n] for n in names}})
    return read_manifest(out)


def nih_test_split(data_dir: Path) -> list[Any]:
    """The test split of nih-cxr800, by the concept data code's patient-level split (seed 0)."""
    from radalign.concepts_training.data import patient_split

    records = nih_records(data_dir)
    return [records[i] for i in patient_split(records)["test"]]


def _labels_of_record(record: Any) -> dict[Observation, Certainty | None]:
    out: dict[Observation, Certainty | None] = {}
    for o, value in zip(Observation, record.labels.tolist(), strict=True):
        out[o] = None if math.isnan(value) else Certainty.PRESENT if value == 1 else Certainty.UNCERTAIN if value == -1 else Certainty.ABSENT
    return out


def nih_studies_oracle(records: Sequence[Any]) -> list[Study]:
    studies = []
    for r in records:
        labels = _labels_of_record(r)
        known = {o: c for o, c in labels.items() if c is not None}
        studies.append(Study(Path(r.image).stem, f"nih:{r.patient_id}", labels, oracle_concepts(known, unmentioned=None)))
    return studies


def nih_studies_predicted(records: Sequence[Any], checkpoint: Path | None = None) -> tuple[list[Study], str]:
    """Concepts from the concept model on the films, exactly as the concept stage scores them:
    with a gated checkpoint (calibrated probabilities, operating points, assessed set, OOD
    threshold) through the stage's own `gated_scores`; with an older one, its thresholds and the
    observations it learnt. Returns (studies, model version)."""
    import torch

    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from radalign.concepts.scoring import to_concept_scores
    from radalign.concepts_training import evaluate as concept_eval

    path = Path(checkpoint or DEFAULT_CHECKPOINT)
    ckpt = load_checkpoint(path)
    gate = getattr(ckpt, "gate", None)
    cache = Path(".radalign/cache/concepts")
    studies = []
    if gate is not None and hasattr(concept_eval, "predict_full"):
        from radalign.concepts.inference import gated_scores

        probabilities, _, ood_scores = concept_eval.predict_full(path, list(records), cache)
        for r, p, o in zip(records, probabilities, ood_scores, strict=True):
            concepts, _not_assessed, ood = gated_scores(p, gate, ood_score=float(o))
            studies.append(Study(Path(r.image).stem, f"nih:{r.patient_id}", _labels_of_record(r), tuple(concepts), ood=ood))
        return studies, ckpt.version
    supported = getattr(ckpt.head, "supported", None)
    learnt = supported.tolist() if isinstance(supported, torch.Tensor) else [True] * len(Observation)
    assessed = {o for o, ok in zip(Observation, learnt, strict=True) if ok}
    probabilities, _ = concept_eval.predict_records(path, list(records), cache)
    for r, p in zip(records, probabilities, strict=True):
        scores = tuple(c for c in to_concept_scores(p) if c.observation in assessed)
        studies.append(Study(Path(r.image).stem, f"nih:{r.patient_id}", _labels_of_record(r), scores))
    return studies, ckpt.version


# -- systems --------------------------------------------------------------------------------------


def normal_template() -> tuple[str, str]:
    """The fixed normal report: the phrase table's normal statements, whatever the image."""
    drafter = DeterministicDrafter()
    context = DraftContext(Prediction.from_scores(oracle_concepts({Observation.NO_FINDING: Certainty.PRESENT})), (), None)
    draft = drafter.draft(context)
    return draft.findings, draft.impression


def _stable_rank(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "big")


def retrieve_top1(study: Study, kb: Sequence[KnowledgeCase], vectors: np.ndarray, score_fn: Callable[[np.ndarray, Sequence[ConceptScore]], np.ndarray]) -> KnowledgeCase | None:
    """The case store's best case for `study` by label agreement with its concepts (another patient's)."""
    if not kb or not study.concepts:
        return None
    scores = np.asarray(score_fn(vectors, study.concepts), dtype=float).copy()
    scores[[i for i, case in enumerate(kb) if case.patient == study.patient]] = -np.inf  # never the study's own patient
    best = float(scores.max())
    if not np.isfinite(best):
        return None
    ties = np.flatnonzero(scores >= best - 1e-9)
    return kb[min(ties, key=lambda i: _stable_rank(study.key, kb[i].key))]


def label_agreement_scores(vectors: np.ndarray, concepts: Sequence[ConceptScore]) -> np.ndarray:
    """Vectorised `radalign.retrieval.core.label_agreement` over the whole case store
    (vectors: (n, 14) with 1 / 0 / -1 and 9 for unmentioned)."""
    credit = {Certainty.PRESENT: {1: 1.0, -1: 0.5, 0: 0.0, 9: 0.0}, Certainty.ABSENT: {1: 0.0, -1: 0.5, 0: 1.0, 9: 1.0}}
    index = {o: i for i, o in enumerate(Observation)}
    used = [c for c in concepts if c.state in credit]
    if not used:
        return np.zeros(len(vectors))
    total = np.zeros(len(vectors))
    for c in used:
        column = vectors[:, index[c.observation]]
        table = credit[c.state]
        total += np.select([column == 1, column == -1, column == 0], [table[1], table[-1], table[0]], table[9])
    return total / len(used)


def kb_vectors(kb: Sequence[KnowledgeCase]) -> np.ndarray:
    code = {Certainty.PRESENT: 1, Certainty.ABSENT: 0, Certainty.UNCERTAIN: -1}
    return np.array([[code[k.labels[o]] if o in k.labels else 9 for o in Observation] for k in kb], dtype=np.int8)


# -- metrics --------------------------------------------------------------------------------------


@dataclass
class Clinical:
    micro: dict[str, dict[str, float]] = field(default_factory=dict)  # set -> {precision, recall, f1, f1_low, f1_high}
    macro: dict[str, dict[str, float]] = field(default_factory=dict)
    per_observation: dict[str, dict[str, float]] = field(default_factory=dict)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        r = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 0.0)
        f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return p, r, f


def clinical_scores(
    predicted: Sequence[Labels], references: Sequence[Mapping[Observation, Certainty | None]], *, n_boot: int = 1000, seed: int = 0
) -> Clinical:
    """CheXpert-label P/R/F1, present = positive; a reference label that is unknown (None) leaves
    that observation of that study out. Micro F1 gets a bootstrap 95 % interval over studies."""
    n = len(predicted)
    obs = list(Observation)
    pred = np.array([[p.get(o) is Certainty.PRESENT for o in obs] for p in predicted], dtype=bool).reshape(n, len(obs))
    known = np.array([[r.get(o) is not None for o in obs] for r in references], dtype=bool).reshape(n, len(obs))
    truth = np.array([[r.get(o) is Certainty.PRESENT for o in obs] for r in references], dtype=bool).reshape(n, len(obs))
    tp, fp, fn = (pred & truth & known), (pred & ~truth & known), (~pred & truth & known)
    rng = np.random.default_rng(seed)
    boots = rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((0, 0), dtype=int)
    out = Clinical()
    for o_index, o in enumerate(obs):
        p, r, f = _prf(tp[:, o_index].sum(), fp[:, o_index].sum(), fn[:, o_index].sum())
        out.per_observation[o.value] = {"precision": float(p), "recall": float(r), "f1": float(f),
                                        "support": int((truth & known)[:, o_index].sum()), "known": int(known[:, o_index].sum())}
    for name, members in OBSERVATION_SETS.items():
        cols = [obs.index(o) for o in members if known[:, obs.index(o)].any()]
        if not cols:
            continue
        t, fpos, fneg = tp[:, cols].sum(), fp[:, cols].sum(), fn[:, cols].sum()
        p, r, f = _prf(t, fpos, fneg)
        per_case = (tp[:, cols].sum(1), fp[:, cols].sum(1), fn[:, cols].sum(1))
        if n:
            bt, bp, bn = (x[boots].sum(1) for x in per_case)
            _, _, bf = _prf(bt, bp, bn)
            low, high = np.percentile(bf, [2.5, 97.5])
        else:
            low = high = float("nan")
        out.micro[name] = {"precision": float(p), "recall": float(r), "f1": float(f), "f1_low": float(low), "f1_high": float(high)}
        with_support = [c for c in cols if (truth & known)[:, c].any()]
        if with_support:
            scores = [_prf(tp[:, c].sum(), fp[:, c].sum(), fn[:, c].sum()) for c in with_support]
            out.macro[name] = {"precision": float(np.mean([s[0] for s in scores])), "recall": float(np.mean([s[1] for s in scores])),
                               "f1": float(np.mean([s[2] for s in scores])), "observations": len(with_support)}
    return out


_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> str:
    """Lower case, words only (the R2Gen-style normalisation used for report generation metrics)."""
    return " ".join(_TOKEN.findall(text.lower()))


def java_available() -> bool:
    return shutil.which("java") is not None


def lexical_scores(
    hypotheses: Sequence[str], references: Sequence[str], *, meteor: bool = True, n_boot: int = 1000, seed: int = 0, per_case: list[float] | None = None
) -> dict[str, float]:
    """BLEU-1..4, ROUGE-L (with a bootstrap 95 % interval), CIDEr, METEOR (Java) from pycocoevalcap.
    `per_case` (optional) receives each report's ROUGE-L, for paired comparisons."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    # pycocoevalcap asserts non-empty token lists: an empty side becomes one placeholder token.
    res = {i: [tokens(h) or "empty"] for i, h in enumerate(hypotheses)}
    gts = {i: [tokens(r) or "empty"] for i, r in enumerate(references)}
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    out.update({f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)})
    rouge, rouge_each = Rouge().compute_score(gts, res)
    out["ROUGE-L"] = float(rouge)
    rng = np.random.default_rng(seed)
    each = np.asarray(rouge_each, dtype=float)
    if per_case is not None:
        per_case.extend(each.tolist())
    if len(each):
        boots = each[rng.integers(0, len(each), size=(n_boot, len(each)))].mean(1)
        out["ROUGE-L_low"], out["ROUGE-L_high"] = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if meteor and java_available():
        from pycocoevalcap.meteor.meteor import Meteor

        scorer = Meteor()
        try:
            out["METEOR"] = float(scorer.compute_score(gts, res)[0])
        finally:
            with contextlib.suppress(Exception):
                scorer.close()
    return out


def grounding_flags(text: tuple[str, str], study: Study, labeler: ReportLabeler) -> dict[str, bool]:
    """What a text claims that the study's concepts do not support (the guard's criteria)."""
    prediction = study.prediction
    labels = labeler.sections(*text)
    supported = {Certainty.PRESENT, Certainty.UNCERTAIN}
    findings = [o for o in Observation if o is not Observation.NO_FINDING]
    words = [reason for s in split_sentences(text[0]) + split_sentences(text[1]) for reason, _ in unsafe_words(s)]
    return {
        "unsupported_positive": any(labels.get(o) is Certainty.PRESENT and prediction.assessed(o) and prediction.states[o] not in supported for o in findings),
        "not_assessed_claim": any(labels.get(o) in supported and not prediction.assessed(o) for o in findings),
        "unsupported_laterality_location": any(r in ("laterality", "location") for r in words),
        "unsupported_comparison_temporal": any(r in ("comparison", "temporal") for r in words),
        "omitted_present": any(labels.get(o) is not Certainty.PRESENT for o in prediction.findings(Certainty.PRESENT)),
    }


# -- the run --------------------------------------------------------------------------------------


@dataclass
class SystemResult:
    name: str
    studies: int
    clinical: Clinical
    lexical: dict[str, float] = field(default_factory=dict)
    grounding: dict[str, float] = field(default_factory=dict)


@dataclass
class Evaluation:
    set_name: str
    mode: str
    split: str
    studies: int
    systems: list[SystemResult]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_studies(
    studies: Sequence[Study],
    *,
    set_name: str,
    mode: str,
    split: str,
    kb: Sequence[KnowledgeCase] = (),
    labeler: ReportLabeler | None = None,
    drafter: DeterministicDrafter | None = None,
    model_states: bool = False,
    meteor: bool = True,
    progress: bool = True,
) -> Evaluation:
    from tqdm.auto import tqdm

    labeler = labeler or default_labeler()
    drafter = drafter or DeterministicDrafter(labeler)
    template = normal_template()
    vectors = kb_vectors(kb) if kb else np.zeros((0, 14), dtype=np.int8)
    texts: dict[str, list[tuple[str, str]]] = {DRAFT: [], TEMPLATE: []}
    if kb:
        texts[RETRIEVED] = []
    for study in tqdm(studies, desc=f"drafting {set_name} ({mode})", unit="study", disable=not progress):
        best = retrieve_top1(study, kb, vectors, label_agreement_scores) if kb else None
        cases = (ExampleCase(best.key, 1.0, best.findings, best.impression),) if best else ()
        draft = drafter.draft(DraftContext(study.prediction, cases, None))
        texts[DRAFT].append((draft.findings, draft.impression))
        texts[TEMPLATE].append(template)
        if kb:
            texts[RETRIEVED].append((best.findings, best.impression) if best else ("", ""))
    references = [s.reference_labels for s in studies]
    systems: list[SystemResult] = []
    rouge_each: dict[str, list[float]] = {}
    if model_states:
        states = [{c.observation: c.state for c in s.concepts} for s in studies]
        systems.append(SystemResult(MODEL, len(studies), clinical_scores(states, references)))
    for name, outputs in texts.items():
        labels = [labeler.sections(*t) for t in tqdm(outputs, desc=f"labelling {name}", unit="report", disable=not progress)]
        result = SystemResult(name, len(studies), clinical_scores(labels, references))
        flags = [grounding_flags(t, s, labeler) for t, s in zip(outputs, studies, strict=True)]
        result.grounding = {k: float(np.mean([f[k] for f in flags])) for k in flags[0]} if flags else {}
        if studies and studies[0].reference is not None:
            refs = [" ".join(s.reference) for s in studies]  # type: ignore[arg-type]  # every study of a reference set has its reference text
            rouge_each[name] = []
            result.lexical = lexical_scores([" ".join(t) for t in outputs], refs, meteor=meteor, per_case=rouge_each[name])
        systems.append(result)
    # Paired bootstrap of the ROUGE-L difference against the normal template (same studies).
    if rouge_each.get(TEMPLATE):
        base = np.asarray(rouge_each[TEMPLATE])
        boots = np.random.default_rng(0).integers(0, len(base), size=(1000, len(base)))
        for s in systems:
            if s.name in rouge_each and s.name != TEMPLATE:
                diff = np.asarray(rouge_each[s.name]) - base
                low, high = np.percentile(diff[boots].mean(1), [2.5, 97.5])
                s.lexical.update({"ROUGE-L_minus_template": float(diff.mean()), "ROUGE-L_minus_template_low": float(low),
                                  "ROUGE-L_minus_template_high": float(high)})
    notes = [] if not kb else [f"retrieval baseline: case store of {len(kb)} reports (other patients), top-1 by label agreement"]
    return Evaluation(set_name, mode, split, len(studies), systems, notes)


# -- output ---------------------------------------------------------------------------------------


def format_table(ev: Evaluation) -> str:
    lines = [f"== {ev.set_name} · mode {ev.mode} · split {ev.split} · {ev.studies} studies"]
    head = f"{'micro F1 [95% CI]':<22}" + "".join(f"{k:>19}" for k in OBSERVATION_SETS) + f"{'macro-14':>10}{'P-14':>7}{'R-14':>7}"
    lines.append(head)
    for s in ev.systems:
        row = f"{s.name:<22}"
        for k in OBSERVATION_SETS:
            m = s.clinical.micro.get(k)
            row += f"{m['f1']:.3f} [{m['f1_low']:.2f},{m['f1_high']:.2f}]".rjust(19) if m else f"{'-':>19}"
        macro = s.clinical.macro.get("14", {}).get("f1")
        micro = s.clinical.micro.get("14", {})
        row += f"{macro:>10.3f}" if macro is not None else f"{'-':>10}"
        row += f"{micro.get('precision', float('nan')):>7.3f}{micro.get('recall', float('nan')):>7.3f}"
        lines.append(row)
    if any(s.lexical for s in ev.systems):
        keys = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr", "METEOR"]
        lines.append(f"{'system':<22}" + "".join(f"{k:>9}" for k in keys) + "   ROUGE-L 95% CI")
        for s in ev.systems:
            if s.lexical:
                ci = f"   [{s.lexical.get('ROUGE-L_low', float('nan')):.3f}, {s.lexical.get('ROUGE-L_high', float('nan')):.3f}]"
                if "ROUGE-L_minus_template" in s.lexical:
                    ci += (f"   vs template {s.lexical['ROUGE-L_minus_template']:+.4f} "
                           f"[{s.lexical['ROUGE-L_minus_template_low']:+.4f}, {s.lexical['ROUGE-L_minus_template_high']:+.4f}] (paired)")
                lines.append(f"{s.name:<22}" + "".join(f"{s.lexical[k]:>9.3f}" if k in s.lexical else f"{'-':>9}" for k in keys) + ci)
    if any(s.grounding for s in ev.systems):
        keys = list(next(s.grounding for s in ev.systems if s.grounding))
        short = {"unsupported_positive": "unsup.pos", "not_assessed_claim": "not-assessed", "unsupported_laterality_location": "lat/loc",
                 "unsupported_comparison_temporal": "compar/temp", "omitted_present": "omitted"}
        lines.append(f"{'share of reports with':<22}" + "".join(f"{short.get(k, k):>14}" for k in keys))
        for s in ev.systems:
            if s.grounding:
                lines.append(f"{s.name:<22}" + "".join(f"{s.grounding[k]:>14.3f}" for k in keys))
    lines += [f"note: {n}" for n in ev.notes]
    return "\n".join(lines)


#: One colour per system in every panel.
_COLOURS = {DRAFT: "tab:blue", TEMPLATE: "tab:orange", RETRIEVED: "tab:green", MODEL: "tab:gray"}


def plot(evaluations: Sequence[Evaluation], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []
    for ev in evaluations:
        metrics = ["F1 14", "F1 13 (no NF)", "F1 5", "F1 5+NF"] + (["BLEU-4", "ROUGE-L", "METEOR"] if any(s.lexical for s in ev.systems) else [])
        panels.append((ev, metrics))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False)
    for ax, (ev, metrics) in zip(axes[0], panels, strict=True):
        width = 0.8 / max(1, len(ev.systems))
        for k, s in enumerate(ev.systems):
            values = []
            for m in metrics:
                if m.startswith("F1 "):
                    values.append(s.clinical.micro.get(m[3:], {}).get("f1", 0.0))
                else:
                    values.append(s.lexical.get(m, 0.0))
            ax.bar(np.arange(len(metrics)) + k * width, values, width, label=s.name, color=_COLOURS.get(s.name))
        ax.set_xticks(np.arange(len(metrics)) + width * (len(ev.systems) - 1) / 2, metrics, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"{ev.set_name} · {ev.mode} · {ev.studies} studies", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def run(
    sets: Sequence[str], *, modes: Sequence[str], split: str, data_dir: Path, out_dir: Path, limit: int | None = None,
    meteor: bool = True, borrow_normal_phrasing: bool = False, progress: bool = True,
) -> list[Evaluation]:
    labeler = default_labeler()
    drafter = DeterministicDrafter(labeler, borrow_normal_phrasing=borrow_normal_phrasing)
    evaluations: list[Evaluation] = []
    kb: list[KnowledgeCase] = []
    if "iu" in sets or "nih-cxr800" in sets:
        held_out, kb, dev = iu_sets(labeler)
    if "iu" in sets:
        studies = held_out if split == "heldout" else dev
        if limit:
            studies = studies[:limit]
        # The dev half is the case store; evaluated on dev, a study must not retrieve its own report.
        evaluations.append(evaluate_studies(studies, set_name="iu", mode="oracle", split=split, kb=kb, labeler=labeler, drafter=drafter, meteor=meteor, progress=progress))
    if "nih-cxr800" in sets:
        records = nih_test_split(data_dir / "nih-cxr800")
        if limit:
            records = records[:limit]
        if "labels-only" in modes or "oracle" in modes:
            evaluations.append(evaluate_studies(nih_studies_oracle(records), set_name="nih-cxr800", mode="labels-only", split="test",
                                                kb=kb, labeler=labeler, drafter=drafter, progress=progress))
        if "predicted" in modes:
            studies, version = nih_studies_predicted(records)
            ev = evaluate_studies(studies, set_name="nih-cxr800", mode="predicted", split="test", kb=kb, labeler=labeler, drafter=drafter,
                                  model_states=True, progress=progress)
            assessed = sorted({c.observation.value for s in studies for c in s.concepts})
            ood = sum(s.ood is not None for s in studies)
            ev.notes.append(f"concept model {version}; assessed: {', '.join(assessed) or 'none'}; OOD (abstained): {ood}/{len(studies)}")
            evaluations.append(ev)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"phrase_table": load_phrase_table().version, "borrow_normal_phrasing": borrow_normal_phrasing,
               "evaluations": [e.to_json() for e in evaluations]}
    (out_dir / "reports_eval.json").write_text(json.dumps(payload, indent=2))
    (out_dir / "reports_eval.txt").write_text("\n\n".join(format_table(e) for e in evaluations) + "\n")
    if evaluations:
        plot(evaluations, out_dir / "reports_eval.png")
    return evaluations

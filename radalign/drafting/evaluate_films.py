"""`radalign eval reports --manifest MANIFEST`: films through the served model and the drafter,
scored against the manifest's own labels (and text, where it has some), beside the baselines.

The concept-manifest format (image, patient_id, one column per observation with 1 / 0 / -1 /
blank, optional `findings` / `impression` or `report`). Each film is scored the way the concept
stage scores it: the served checkpoint's probabilities and OOD score (or, with `--site`, the
site's live site model on the same encoder's pooled features), then the stage's own
`gated_scores` with that model's gate and claim policy; the drafter writes the draft from that.

Systems, in one run, each read back by the project's labeler and counted against the
**reference labels** (never against the model's own predictions):
- `draft`: the product;
- `normal_template`: the fixed normal report, whatever the film;
- `top1`: the report of the case-store case that best agrees with the film's concepts (IU
  reports, another patient's), copied verbatim; a film with nothing assessed retrieves nothing.
A system's output that claims nothing (a draft that abstained or earned no state, an empty top-1)
is scored as no claim at all: the CheXpert labeler would read finding-free text as No Finding.
Figures: micro F1 over the 14 observations (present = positive; an unknown reference label is
left out) with a bootstrap 95 % CI; the unsupported-claim rate (stated or hedged findings the
reference labels absent, among all such claims with a known reference); the share of normal
films (reference No Finding) that get no finding claim; the precision of each stated finding
with its Wilson interval; ROUGE-L where the manifest has text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radalign.concepts.policy import wilson_lower_bound
from radalign.concepts_training.data import Record, read_manifest
from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.evaluate import (
    ALL_14,
    KnowledgeCase,
    Study,
    clinical_scores,
    kb_vectors,
    label_agreement_scores,
    lexical_scores,
    normal_template,
    retrieve_top1,
)
from radalign.drafting.labels import ReportLabeler, default_labeler
from schemas.events import Certainty, ConceptScore, Observation, OutOfDistribution

SYSTEMS = ("draft", "normal_template", "top1")
FINDINGS = tuple(o for o in Observation if o is not Observation.NO_FINDING)


@dataclass(frozen=True)
class ScoredFilm:
    record: Record
    concepts: tuple[ConceptScore, ...]
    ood: OutOfDistribution | None
    reference_text: tuple[str, str] | None


def reference_labels(record: Record) -> dict[Observation, Certainty | None]:
    out: dict[Observation, Certainty | None] = {}
    for o, value in zip(ALL_14, record.labels.tolist(), strict=True):
        out[o] = None if np.isnan(value) else Certainty.PRESENT if value == 1 else Certainty.UNCERTAIN if value == -1 else Certainty.ABSENT
    return out


def _reference_text(manifest: Path) -> dict[str, tuple[str, str]]:
    import csv

    out = {}
    with manifest.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            findings = (row.get("findings") or row.get("report") or "").strip()
            impression = (row.get("impression") or "").strip()
            if findings or impression:
                image = Path(row["image"])
                out[str((image if image.is_absolute() else manifest.parent / image).resolve())] = (findings, impression)
    return out


def score_films(
    records: Sequence[Record], *, site: str | None, sites_dir: Path, cache_dir: Path, checkpoint: Path | None = None
) -> tuple[list[tuple[tuple[ConceptScore, ...], OutOfDistribution | None]], str]:
    """(concepts, abstention) per film as the concept stage computes them, and the model's name."""
    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
    from radalign.concepts.gate import ServedGate
    from radalign.concepts.inference import gated_scores
    from radalign.concepts.ood import pool
    from radalign.concepts_training.evaluate import predict_full
    from radalign.concepts_training.features import cached_features
    from radalign.sites.head import load_head, predict
    from radalign.sites.registry import live_head

    checkpoint = Path(checkpoint or DEFAULT_CHECKPOINT)
    ckpt = load_checkpoint(checkpoint)
    head_file = live_head(sites_dir, site) if site else None
    if head_file is not None:
        head, meta = load_head(head_file)
        gate = ServedGate.from_dict(meta["gate"])
        probs, ood = predict(head, pool(cached_features(list(records), meta["encoder"], cache_dir, progress=False)))
        name = meta["version"]
    else:
        if ckpt.gate is None:
            raise ValueError(f"{checkpoint} has no gate: the served model scores nothing it was not validated for")
        gate = ckpt.gate
        probs, _, ood = predict_full(checkpoint, list(records), cache_dir)
        name = ckpt.version
    out = []
    for p, o in zip(probs, ood, strict=True):
        concepts, _, abstained = gated_scores(p, gate, ood_score=float(o))
        out.append((tuple(concepts), abstained))
    return out, name


def iu_case_store(labeler: ReportLabeler) -> list[KnowledgeCase]:
    """The top-1 baseline's case store: the IU reports (another population's patients)."""
    from radalign.labeler import load_iu_reports

    return [
        KnowledgeCase(f"iu-{r.uid}", f"iu:{r.uid}", r.findings, r.impression, dict(labeler.sections(r.findings, r.impression)))
        for r in load_iu_reports()
        if r.findings and r.impression
    ]


def claim_figures(texts: Sequence[tuple[str, str]], references: Sequence[Mapping[Observation, Certainty | None]], labeler: ReportLabeler) -> dict[str, Any]:
    """Claims read back from each text against the reference labels."""
    claims = unsupported = normal_films = normal_clean = 0
    stated: dict[str, list[int]] = {}
    for text, ref in zip(texts, references, strict=True):
        read = labeler.sections(*text)
        finding_claims = [o for o in FINDINGS if read.get(o) in (Certainty.PRESENT, Certainty.UNCERTAIN)]
        for o in finding_claims:
            if ref.get(o) is not None:
                claims += 1
                unsupported += ref[o] is Certainty.ABSENT
        for o in FINDINGS:
            if read.get(o) is Certainty.PRESENT and ref.get(o) in (Certainty.PRESENT, Certainty.ABSENT):
                stated.setdefault(o.value, []).append(int(ref[o] is Certainty.PRESENT))
        if ref.get(Observation.NO_FINDING) is Certainty.PRESENT:
            normal_films += 1
            normal_clean += not finding_claims
    precision = {o: {"claims": len(v), "correct": sum(v), "precision": sum(v) / len(v), "lower_bound": wilson_lower_bound(sum(v), len(v))}
                 for o, v in sorted(stated.items())}
    return {
        "claims": claims, "unsupported_claims": unsupported, "unsupported_claim_rate": unsupported / claims if claims else 0.0,
        "normal_films": normal_films, "normal_films_without_finding_claim": normal_clean / normal_films if normal_films else None,
        "stated_precision": precision,
    }


def evaluate_manifest(
    manifest: str | Path, *, split: str = "all", site: str | None = None, sites_dir: Path, cache_dir: Path = Path(".radalign/cache/concepts"),
    secret: str = "", issuer: str | None = None, checkpoint: Path | None = None, n_boot: int = 1000, labeler: ReportLabeler | None = None,
) -> dict[str, Any]:
    from radalign.sites.macros import load_normal_macros

    manifest = Path(manifest)
    records = read_manifest(manifest)
    if split != "all":
        if not site:
            raise ValueError("a split other than all needs --site (the site model's own patient split)")
        from radalign.pseudonymizer import Pseudonymizer
        from radalign.sites.train import split_of

        pseudonyms = Pseudonymizer(secret)
        records = [r for r in records if split_of(pseudonyms.patient_key(r.patient_id, issuer or site)) == split]
    if not records:
        raise ValueError(f"{manifest}: no labelled films in split {split!r}")
    labeler = labeler or default_labeler()
    scored, model = score_films(records, site=site, sites_dir=sites_dir, cache_dir=cache_dir, checkpoint=checkpoint)
    texts_by_image = _reference_text(manifest)
    references = [reference_labels(r) for r in records]
    drafter = DeterministicDrafter(labeler, normal_macros=load_normal_macros(sites_dir))
    template = normal_template()
    kb = iu_case_store(labeler)
    vectors = kb_vectors(kb)
    outputs: dict[str, list[tuple[str, str]]] = {name: [] for name in SYSTEMS}
    # A draft that claims nothing (abstained, or no state earned) says so; the CheXpert labeler
    # would read its finding-free text as No Finding, so it is scored as what it is: no claim.
    claims_nothing = [ood is not None or not concepts for concepts, ood in scored]
    for record, (concepts, ood) in zip(records, scored, strict=True):
        context = DraftContext(Prediction.from_scores(concepts, ood=ood), (), record.view or None, site=site)
        draft = drafter.draft(context)
        outputs["draft"].append((draft.findings, draft.impression))
        outputs["normal_template"].append(template)
        study = Study(record.image.stem, f"film:{record.patient_id}", {}, concepts if ood is None else ())
        best = retrieve_top1(study, kb, vectors, label_agreement_scores)
        outputs["top1"].append((best.findings, best.impression) if best else ("", ""))
    with_text = [i for i, r in enumerate(records) if str(r.image.resolve()) in texts_by_image]
    systems = []
    for name in SYSTEMS:
        predicted = [{} if (name == "draft" and silent) or not any(t) else labeler.sections(*t) for t, silent in zip(outputs[name], claims_nothing, strict=True)]
        clinical = clinical_scores(predicted, references, n_boot=n_boot)
        micro = clinical.micro.get("14", {})
        entry: dict[str, Any] = {"name": name, "micro_f1": micro.get("f1"), "micro_f1_ci": [micro.get("f1_low"), micro.get("f1_high")],
                                 "micro_precision": micro.get("precision"), "micro_recall": micro.get("recall")}
        entry |= claim_figures(outputs[name], references, labeler)
        if with_text:
            hyp = [" ".join(outputs[name][i]) for i in with_text]
            ref = [" ".join(texts_by_image[str(records[i].image.resolve())]) for i in with_text]
            lex = lexical_scores(hyp, ref, meteor=False, n_boot=n_boot)
            entry["rouge_l"], entry["rouge_l_ci"] = lex["ROUGE-L"], [lex.get("ROUGE-L_low"), lex.get("ROUGE-L_high")]
        systems.append(entry)
    abstained = sum(ood is not None for _, ood in scored)
    nothing = sum(not concepts and ood is None for concepts, ood in scored)
    return {
        "manifest": str(manifest), "split": split, "site": site, "model": model, "films": len(records), "films_with_text": len(with_text),
        "abstained_ood": abstained, "nothing_claimed": nothing, "systems": systems,
        "top1_case_store": f"IU reports ({len(kb)}), by label agreement with the film's concepts",
    }


def format_report(result: Mapping[str, Any]) -> str:
    lines = [f"{result['films']} films ({result['split']}), model {result['model']}{', site ' + result['site'] if result['site'] else ''}; "
             f"abstained (OOD) {result['abstained_ood']}, nothing claimed {result['nothing_claimed']}",
             f"{'system':<17}{'micro F1 [95% CI]':<24}{'unsupported claims':<22}{'normal films clean':<20}{'ROUGE-L':<8}"]
    for s in result["systems"]:
        ci = s["micro_f1_ci"]
        f1 = f"{s['micro_f1']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if s["micro_f1"] is not None else "-"
        clean = "-" if s["normal_films_without_finding_claim"] is None else f"{s['normal_films_without_finding_claim']:.3f} of {s['normal_films']}"
        rouge = f"{s['rouge_l']:.3f}" if "rouge_l" in s else "-"
        lines.append(f"{s['name']:<17}{f1:<24}{s['unsupported_claims']:>4}/{s['claims']:<4} ({s['unsupported_claim_rate']:.3f})   {clean:<20}{rouge:<8}")
    draft = next(s for s in result["systems"] if s["name"] == "draft")
    for obs, p in draft["stated_precision"].items():
        lines.append(f"  draft states {obs}: {p['correct']}/{p['claims']} right (precision {p['precision']:.3f}, lower bound {p['lower_bound']:.3f})")
    return "\n".join(lines)


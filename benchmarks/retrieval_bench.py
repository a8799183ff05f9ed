"""Retrieval on images whose true labels are known: nih-cxr800's held-out films against the IU case store.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval_bench.py [--audit-split val | --site-profile PATH]
        [--checkpoint C] [--manifest M] [--dsn DSN] [--state DIR] [--out FILE.json]

**Split: exactly the concept model's own.** Queries are the nih-cxr800 rows of the multi-source
manifest (`radalign train concepts-sources`, rebuilt here with the same function unless --manifest
is given), split with `radalign.concepts_training.sources.checkpoint_split`: the trainer's steps and
`split_by_source` with the seed and fractions stored in the checkpoint (60/20/20 per source for the
shipped one). *test* queries are the trainer's nih-cxr800 test rows (never used for fitting,
early stopping, calibration, the gate or any decision here); *val* queries are its nih-cxr800
validation rows. The run stops if the rebuilt split's per-source counts differ from the ones the
checkpoint recorded. (Until this change the benchmark split nih-cxr800 alone 70/15/15: its test
films were a subset of the trainer's test rows, but 33 of its 101 val films were trainer test rows.)

**Model and gates.** Every query goes through the served model's computation (`predict_full`:
calibrated probabilities, embedding, OOD score of the checkpoint `radalign stack up` serves) and the
concepts stage's own event builder, once per gate setting:
- `shipped`: the checkpoint's validity gate (assessed observations, operating points, OOD threshold);
- `site`: a site profile, as the stage applies it to a site that ran `radalign audit`. With
  `--audit-split val` the benchmark audits nih-cxr800's *validation* rows only (their rows of the
  manifest written to an audit manifest; `radalign.concepts_training.audit.audit`, the function behind
  `radalign audit MANIFEST --site nih-cxr800`) and uses the profile it writes; `--site-profile PATH`
  uses an existing profile (it must be audited against the served model version, or the stage
  would ignore it). Test rows never reach an audit.

Methods, against the same case store (the IU reports labelled by the project's labeler with
CheXpert's hierarchy, in a real PostgreSQL + pgvector):
- random: 5 cases drawn uniformly, scored by its exact expectation (the mean over every case, so
  no draw noise moves the ratios);
- normal cases: 5 cases drawn among those whose only positive is No Finding, also its exact
  expectation: the retrieval form of the normal-template baseline. About half of nih-cxr800's
  films are normal, so it scores well above random; a retrieval that does not beat it has not
  used the image;
- embedding: the top 5 by cosine of the image embedding to the reports' text / image embeddings;
- today [gate]: the previous retrieval (embedding candidates re-ranked by label agreement, w = 0.5);
- profile [gate]: concept-profile retrieval (the served default, embedding weight 0);
- profile+emb [gate]: the same fused with the embedding (weight 0.3);
- oracle-profile: profile retrieval fed the query's *true* labels (p 0.95 / 0.05): what the
  method reaches when the concept model is right, an upper bound (not a method one can deploy).

Metrics per query, averaged over its 5 cases, over the observations NIH labels (No Finding
included): `jaccard` of the query's and the case's positive sets (uncertain case labels are not
positive), and `hit`: the share of cases sharing at least one positive with the query. A query a
method returns no case for (the model abstained: OOD, or nothing assessed) scores 0; `answered` is
the share of queries with at least one case. 95 % bootstrap CIs resample patients; ratios and
differences are paired (same resamples). The decision whether to fuse the embedding is taken on
*val* (embedding better than random: the lower CI bound of the paired difference above 0); *test*
only reports. The case store is a private embedded PostgreSQL unless --dsn is given; IU ingest is
idempotent (about 3-5 minutes the first time on 2 cores: the text encoder embeds 3,927 reports;
--state keeps it between runs).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radalign.kb.labels import OBSERVATIONS  # noqa: E402 - after the repository root is on sys.path
from schemas.events import Certainty, ConceptScore, Observation, StudyRef  # noqa: E402

GATE_METHODS = ("today", "profile", "profile+emb")
FUSED_WEIGHT = 0.3
K = 5
SITE = "nih-cxr800"
TARGET = 1.5


@dataclass
class Query:
    image: Path
    patient: str
    truth: dict[Observation, int]  # the observations NIH labels: 1 / 0


def methods(gates: list[str]) -> list[str]:
    return ["random", "normal cases", "embedding", *[f"{m} [{g}]" for g in gates for m in GATE_METHODS], "oracle-profile"]


def split_queries(meta: dict[str, Any], manifest: Path, source: str = SITE) -> tuple[dict[str, list[Query]], dict[str, list[int]], list]:
    """val / test queries: `source`'s rows of the checkpoint's own split (`checkpoint_split`), their
    indices into the records, and the records. Raises if the split does not reproduce the counts
    the checkpoint recorded at training time."""
    from radalign.concepts_training.sources import checkpoint_split, split_mismatch

    records, parts = checkpoint_split(meta, manifest)
    problems = split_mismatch(meta, records, parts)
    if problems:
        raise SystemExit(f"{manifest} does not reproduce the checkpoint's split: " + "; ".join(problems))
    indices = {name: [i for i in parts[name] if records[i].source == source] for name in ("val", "test")}
    queries = {
        name: [Query(records[i].image, records[i].patient_id,
                     {o: int(v) for o, v in zip(OBSERVATIONS, records[i].labels.tolist(), strict=True) if not math.isnan(v)})
               for i in idx]
        for name, idx in indices.items()
    }
    return queries, indices, records


def concept_events(queries: list[Query], probs: np.ndarray, embs: np.ndarray, ood: np.ndarray, gate, version: str, supported: list[str]) -> list:
    """ConceptsInferred per query, built by the concepts stage's core with this gate (None: ungated)."""
    from radalign.concepts.inference import build_concepts_event
    from schemas.events import StudyPreprocessed

    events = []
    for i, q in enumerate(queries):
        # no identifier leaves the benchmark: keys are hashes of the manifest's patient id
        patient = hashlib.sha256(q.patient.encode()).hexdigest()[:16]
        study = StudyRef(study_key=f"st-{i:016x}", patient_key=f"pt-{patient}", received_at=datetime.now(UTC), pipeline_version="bench")
        pre = StudyPreprocessed.model_construct(study=study, view_position="PA", lateral_only=False, timings=[])
        events.append(build_concepts_event(pre, probs[i], embs[i], model_version=version, supported=supported, gate=gate, ood_score=float(ood[i])))
    return events


def positives_of_case(label_vector) -> set[Observation]:
    return {o for o, code in zip(OBSERVATIONS, label_vector, strict=True) if code == 1}


def scores(query: Query, cases_labels: list[set[Observation]]) -> tuple[float, float]:
    known = set(query.truth)
    truth = {o for o, v in query.truth.items() if v == 1}
    jaccard, hit = [], []
    for positives in cases_labels:
        positives = positives & known
        union = truth | positives
        jaccard.append(len(truth & positives) / len(union) if union else 1.0)
        hit.append(float(bool(truth & positives)))
    return float(np.mean(jaccard)) if jaccard else 0.0, float(np.mean(hit)) if hit else 0.0


def bootstrap(per_query: dict[str, np.ndarray], patients: list[str], pairs: list[tuple[str, str]], n: int = 1000, seed: int = 0) -> dict:
    """Means with 95 % CIs resampling patients, paired ratios / differences to random, and the
    paired difference of each (a, b) in `pairs` (stored under a as `minus[b]`)."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        groups.setdefault(p, []).append(i)
    members = list(groups.values())
    means: dict[str, list[float]] = {m: [] for m in per_query}
    for _ in range(n):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        for m, values in per_query.items():
            means[m].append(float(values[idx].mean()))
    draws = {m: np.array(v) for m, v in means.items()}
    base = draws["random"]

    def ci(values: np.ndarray) -> list[float]:
        return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]

    out: dict[str, dict] = {}
    for m, values in per_query.items():
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(base > 0, draws[m] / base, np.nan)
        out[m] = {
            "mean": float(values.mean()), "ci": ci(draws[m]),
            "ratio_to_random": float(values.mean() / per_query["random"].mean()), "ratio_ci": ci(ratio),
            "diff_ci": ci(draws[m] - base), "minus": {},
        }
    for a, b in pairs:
        out[a]["minus"][b] = {"mean": float(per_query[a].mean() - per_query[b].mean()), "ci": ci(draws[a] - draws[b])}
    return out


async def run_split(store, settings, queries: list[Query], events: dict[str, list], case_labels: dict[str, tuple]) -> dict:
    from radalign.retrieval.core import retrieve, retrieve_by_embedding

    gates = list(events)
    names = methods(gates)
    per_query: dict[str, dict[str, list[float]]] = {m: {"jaccard": [], "hit": [], "answered": []} for m in names}
    latency: dict[str, list[float]] = {g: [] for g in gates}
    all_cases = [positives_of_case(case_labels[k]) for k in sorted(case_labels)]
    normal_cases = [p for p in all_cases if p == {Observation.NO_FINDING}]
    fused = settings.model_copy(update={"retrieval_embedding_weight": FUSED_WEIGHT})

    def record(method: str, j: float, h: float, answered: bool) -> None:
        per_query[method]["jaccard"].append(j)
        per_query[method]["hit"].append(h)
        per_query[method]["answered"].append(float(answered))

    for n, query in enumerate(queries):
        for method, pool in (("random", all_cases), ("normal cases", normal_cases)):
            # the expectation of 5 uniform draws is the mean over the whole pool
            record(method, *scores(query, pool), True)
        first = events[gates[0]][n]
        retrieved = {"embedding": await retrieve_by_embedding(store, first, settings, label_weight=0.0)}
        for g in gates:
            event = events[g][n]
            retrieved[f"today [{g}]"] = await retrieve_by_embedding(store, event, settings, label_weight=0.5)
            t0 = time.perf_counter()
            retrieved[f"profile [{g}]"] = await retrieve(store, event, settings)
            latency[g].append(time.perf_counter() - t0)
            retrieved[f"profile+emb [{g}]"] = await retrieve(store, event, fused)
        oracle = [ConceptScore(observation=o, probability=0.95 if v else 0.05, state=Certainty.PRESENT if v else Certainty.ABSENT) for o, v in query.truth.items()]
        retrieved["oracle-profile"] = await retrieve(store, first.model_copy(update={"concepts": oracle, "not_assessed": [], "ood": None}), settings)
        for method, cases in retrieved.items():
            j, h = scores(query, [positives_of_case(case_labels[c.case_key]) for c in cases])
            record(method, j, h, bool(cases))
        if (n + 1) % 50 == 0 or n + 1 == len(queries):
            print(f"  {n + 1}/{len(queries)} queries", flush=True)
    patients = [q.patient for q in queries]
    pairs = [(f"profile [{g}]", f"today [{gates[0]}]") for g in gates]
    pairs += [(f"profile [{g}]", "normal cases") for g in gates]
    pairs += [(f"profile [{g}]", f"profile [{gates[0]}]") for g in gates[1:]]
    result = {metric: bootstrap({m: np.array(v[metric]) for m, v in per_query.items()}, patients, pairs) for metric in ("jaccard", "hit")}
    result["answered"] = {m: float(np.mean(v["answered"])) for m, v in per_query.items()}
    result["profile_p50_ms"] = {g: float(np.median(v) * 1000) for g, v in latency.items()}
    return result


def audit_validation_rows(manifest: Path, records: list, val_indices: list[int], checkpoint: Path, cache_dir: Path, out_dir: Path) -> Path:
    """Audit nih-cxr800's validation rows as a site would audit its own films (`radalign audit`);
    returns the site profile written. Test rows are never passed."""
    from radalign.concepts_training.audit import audit
    from radalign.concepts_training.sources import write_split_manifest

    audit_manifest = write_split_manifest(manifest, [records[i] for i in val_indices], out_dir / f"{SITE}-val-audit.csv")
    print(f"auditing {len(val_indices)} validation films: radalign audit {audit_manifest} --site {SITE} --profiles-dir {out_dir / 'site_profiles'}")
    result = audit(audit_manifest, SITE, checkpoint=checkpoint, profiles_dir=out_dir / "site_profiles", cache_dir=cache_dir)
    print(result.table())
    return result.profile


def load_site_profile(path: Path, version: str):
    from radalign.concepts.gate import load_profile

    profile = load_profile(path)
    if profile.model_version is not None and profile.model_version != version:
        raise SystemExit(f"{path} was audited against {profile.model_version}, the served model is {version}: the stage would ignore it; re-audit")
    return profile


def print_split(name: str, block: dict, gates: list[str]) -> None:
    result = block["result"]
    latency = ", ".join(f"{g} {ms:.1f} ms" for g, ms in result["profile_p50_ms"].items())
    print(f"\n{name}: {block['n']} images ({block['patients']} patients); abstained (OOD): {block['abstained']}; profile retrieval p50 {latency}")
    if name == "val" and "site" in gates:
        print("  (the site profile was audited on these val films: [site] rows here are in-sample; test is the held-out figure)")
    print(f"{'method':<22}{'jaccard [95% CI]':>24}{'x random [95% CI]':>22}{'hit [95% CI]':>24}{'x random':>10}{'answered':>10}")
    for m in methods(gates):
        j, h = result["jaccard"][m], result["hit"][m]
        print(
            f"{m:<22}{j['mean']:>8.3f} [{j['ci'][0]:.3f}, {j['ci'][1]:.3f}]"
            f"{j['ratio_to_random']:>8.2f} [{j['ratio_ci'][0]:.2f}, {j['ratio_ci'][1]:.2f}]"
            f"{h['mean']:>10.3f} [{h['ci'][0]:.3f}, {h['ci'][1]:.3f}]{h['ratio_to_random']:>10.2f}{result['answered'][m]:>10.2f}"
        )


def verdict(ratio: float, ci: list[float]) -> str:
    if ci[0] >= TARGET:
        return "met (the whole CI is above the target)"
    if ci[1] < TARGET:
        return "NOT met (the whole CI is below the target)"
    return "not shown (the CI spans the target)"


def plot(out: dict, gates: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = methods(gates)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for offset, split in ((-0.2, "val"), (0.2, "test")):
        rows = out[split]["result"]["jaccard"]
        x = np.arange(len(names)) + offset
        ratios = [rows[m]["ratio_to_random"] for m in names]
        low = [r - rows[m]["ratio_ci"][0] for r, m in zip(ratios, names, strict=True)]
        high = [rows[m]["ratio_ci"][1] - r for r, m in zip(ratios, names, strict=True)]
        ax.bar(x, ratios, width=0.4, yerr=[low, high], capsize=3, label=f"{split} ({out[split]['n']} images)")
    ax.axhline(1.0, color="grey", lw=1)
    ax.axhline(TARGET, color="red", lw=1, ls="--", label=f"target {TARGET}x")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("top-5 Jaccard / random (95% CI)")
    note = "; [site] on val is in-sample (audited there)" if "site" in gates else ""
    ax.set_title(f"Retrieval on nih-cxr800 held-out films, model {out['model_version']}{note}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


async def main_async(args) -> int:
    from radalign.concepts.checkpoint import load_checkpoint
    from radalign.concepts_training.evaluate import predict_full
    from radalign.concepts_training.sources import write_multisource_manifest
    from radalign.config import Settings
    from radalign.kb.ingest import IU_SOURCE, IngestReport, default_label_fn, ingest_drafts, iu_drafts
    from radalign.kb.store import CaseStore

    ckpt = load_checkpoint(args.checkpoint)
    version = ckpt.version
    manifest = args.manifest or write_multisource_manifest(args.shared_data, args.out_dir / "multisource.csv")
    queries, indices, records = split_queries(ckpt.meta, manifest)
    fractions = ckpt.meta.get("split", {}).get("fractions")
    print(f"split: the checkpoint's own (split_by_source, fractions {fractions}, seed {ckpt.meta.get('split', {}).get('seed', 0)}) "
          f"of {manifest}: nih-cxr800 val {len(queries['val'])}, test {len(queries['test'])} films")
    t0 = time.perf_counter()
    predictions = {name: predict_full(args.checkpoint, records, args.cache_dir, indices=idx) for name, idx in indices.items()}
    print(f"concept model {version}: predicted {sum(len(i) for i in indices.values())} films in {time.perf_counter() - t0:.1f} s")
    gates: dict[str, Any] = {"shipped" if ckpt.gate is not None else "ungated": ckpt.gate}
    profile_path = args.site_profile
    if args.audit_split:
        profile_path = audit_validation_rows(manifest, records, indices["val"], args.checkpoint, args.cache_dir, args.out_dir)
    if profile_path:
        gates["site"] = load_site_profile(profile_path, version)
        print(f"site profile {profile_path}: assessed {', '.join(gates['site'].assessed) or 'none'} "
              f"(shipped gate: {', '.join(ckpt.gate.assessed) if ckpt.gate else 'ungated'})")
    supported = list(ckpt.meta.get("supported_observations") or [o.value for o in OBSERVATIONS])
    events = {name: {g: concept_events(queries[name], *predictions[name], gate, version, supported) for g, gate in gates.items()} for name in ("val", "test")}
    settings = Settings(database_url=args.dsn) if args.dsn else args.settings
    out: dict[str, Any] = {"model_version": version, "manifest": str(manifest), "split": ckpt.meta.get("split"),
                           "gates": {g: (gate.to_dict() if gate else None) for g, gate in gates.items()},
                           "site_profile": str(profile_path) if profile_path else None}
    async with await CaseStore.open(settings) as store:
        report = IngestReport(IU_SOURCE)
        drafts = iu_drafts(settings.deid_secret, default_label_fn(), report=report)
        await ingest_drafts(store, drafts, with_images=False, progress=True, report=report)
        print(report.summary())
        async with store._pool.connection() as conn:
            rows = await (await conn.execute("SELECT case_key, label_vector FROM cases WHERE source = %s", (IU_SOURCE,))).fetchall()
        case_labels = {k: tuple(v) for k, v in rows}
        out["cases"] = len(case_labels)
        for name in ("val", "test"):
            print(f"retrieving for {name} ...", flush=True)
            result = await run_split(store, settings, queries[name], events[name], case_labels)
            abstained = {g: sum(e.ood is not None for e in ev) for g, ev in events[name].items()}
            out[name] = {"result": result, "n": len(queries[name]), "patients": len({q.patient for q in queries[name]}), "abstained": abstained}
    names = list(gates)
    for name in ("val", "test"):
        print_split(name, out[name], names)
    val_emb = out["val"]["result"]["jaccard"]["embedding"]
    decision = val_emb["diff_ci"][0] > 0
    out["fuse_embedding"] = decision
    print(
        f"\ndecision (val only): embedding minus random jaccard 95% CI [{val_emb['diff_ci'][0]:+.3f}, {val_emb['diff_ci'][1]:+.3f}] -> "
        + (f"fuse the embedding (weight {FUSED_WEIGHT})" if decision else "embedding weight 0 (no better than chance)")
    )
    test = out["test"]["result"]["jaccard"]
    for g in names:
        row = test[f"profile [{g}]"]
        for other, diff in row["minus"].items():
            print(f"test jaccard, profile [{g}] minus {other}: {diff['mean']:+.3f} [95% CI {diff['ci'][0]:+.3f}, {diff['ci'][1]:+.3f}] (paired)")
    for g in names:
        row = test[f"profile [{g}]"]
        print(f"target, profile [{g}]: top-5 jaccard {row['ratio_to_random']:.2f}x random on test [95% CI {row['ratio_ci'][0]:.2f}, "
              f"{row['ratio_ci'][1]:.2f}] (goal >= {TARGET}x): {verdict(row['ratio_to_random'], row['ratio_ci'])}")
    normal = test["normal cases"]
    print(f"baseline, normal cases: {normal['ratio_to_random']:.2f}x random on test [95% CI {normal['ratio_ci'][0]:.2f}, {normal['ratio_ci'][1]:.2f}]")
    png = plot(out, names, args.out_dir / "retrieval_bench.png")
    print(f"plot: {png}")
    json_path = Path(args.out) if args.out else args.out_dir / "retrieval_bench.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {json_path}")
    return 0


def main() -> int:
    from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data", help="folder holding cxr-public/ and nih-cxr800/")
    parser.add_argument("--manifest", type=Path, help="the multi-source manifest the checkpoint was trained on (default: rebuilt from --shared-data)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help="the served checkpoint (default: the shipped one)")
    parser.add_argument("--cache-dir", type=Path, default=Path(".radalign/cache/concepts"), help="encoder feature cache")
    parser.add_argument("--out-dir", type=Path, default=Path(".radalign/reports/retrieval_bench"), help="manifests, site profile, plot, JSON")
    gate = parser.add_mutually_exclusive_group()
    gate.add_argument("--audit-split", choices=["val"], help="also run with the site profile of an audit of nih-cxr800's rows of this split")
    gate.add_argument("--site-profile", type=Path, help="also run with this site profile (radalign audit's output)")
    parser.add_argument("--dsn", help="a PostgreSQL with pgvector and the migrations (default: a private embedded one)")
    parser.add_argument("--out", help="write the figures as JSON here (default: OUT_DIR/retrieval_bench.json)")
    parser.add_argument("--state", type=Path, help="reuse this embedded stack state folder (keeps the embedded IU cases)")
    args = parser.parse_args()
    if not (args.shared_data / SITE / "metadata.csv").is_file() and args.manifest is None:
        print(f"nih-cxr800 not found under {args.shared_data}", file=sys.stderr)
        return 2
    if args.dsn:
        return asyncio.run(main_async(args))
    from radalign.stack import down, up
    from radalign.testing.stack import short_state_dir, stack_settings

    state = args.state or short_state_dir("radalign-rbench-")
    args.settings = stack_settings(state)
    up(args.settings, ["postgres"])
    try:
        from radalign.db import apply_migrations

        apply_migrations(args.settings.dsn)
        return asyncio.run(main_async(args))
    finally:
        down(args.settings)


if __name__ == "__main__":
    raise SystemExit(main())

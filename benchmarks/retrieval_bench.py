"""Retrieval on images whose true labels are known: nih-cxr800 (held-out split) against the IU case store.

    PYTHONPATH=. .venv/bin/python benchmarks/retrieval_bench.py [--dsn DSN] [--data ../shared/data/nih-cxr800]

For every query image the shipped concept model's predictions (the checkpoint that `radalign
stack up` serves, through the concepts stage's own event builder, so new checkpoints and gating
are picked up) go through each method against the same case store (the IU reports, labelled by
the project's labeler with CheXpert's hierarchy, in a real PostgreSQL + pgvector):

- random: 5 cases drawn uniformly (20 draws per query, averaged);
- embedding: the top 5 by cosine of the image embedding to the reports' text embeddings;
- today: the previous retrieval (embedding candidates re-ranked by label agreement, w = 0.5);
- profile: concept-profile retrieval (the served default, embedding weight 0);
- profile+emb: the same fused with the embedding (weight 0.3);
- oracle-profile: profile retrieval fed the query's *true* labels (p 0.95 / 0.05): what the
  method reaches when the concept model is right, an upper bound that separates retrieval from
  model quality (not a method one can deploy).

Metrics per query, averaged over its 5 cases, over the observations NIH labels (No Finding
included): `jaccard` of the query's and the case's positive sets (uncertain case labels are not
positive), and `hit`: the share of cases sharing at least one positive with the query. 95 %
bootstrap CIs resample patients; ratios to random are paired (same resamples).

Splits: patients split 70/15/15 with `radalign.concepts.data.patient_split` (seed 0, the
training code's split). The decision whether to fuse the embedding is taken on the *val* split
(embedding better than random: the lower CI bound of the paired difference above 0); *test* only
reports. The case store is a private embedded PostgreSQL unless --dsn is given; IU ingest is
idempotent (about 3-5 minutes the first time on 2 cores: the text encoder embeds 3,927 reports).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radalign.kb.labels import OBSERVATIONS  # noqa: E402 - after the repository root is on sys.path
from schemas.events import Certainty, ConceptScore, Observation, StudyRef  # noqa: E402

METHODS = ("random", "embedding", "today", "profile", "profile+emb", "oracle-profile")
FUSED_WEIGHT = 0.3
K = 5


@dataclass
class Query:
    image: Path
    patient: str
    truth: dict[Observation, int]  # the observations NIH labels: 1 / 0


def load_queries(data: Path) -> dict[str, list[Query]]:
    from radalign.concepts.data import Record, patient_split

    rows = list(csv.DictReader((data / "metadata.csv").open()))
    records, queries = [], []
    for row in rows:
        truth = {o: int(row[o.value]) for o in OBSERVATIONS if row.get(o.value, "") != ""}
        labels = np.array([truth.get(o, np.nan) for o in OBSERVATIONS], dtype=np.float32)
        records.append(Record(image=data / row["image_file"], patient_id=row["patient_id"], labels=labels))
        queries.append(Query(data / row["image_file"], row["patient_id"], truth))
    split = patient_split(records, seed=0)
    return {name: [queries[i] for i in split[name]] for name in ("val", "test")}


def predict(queries: list[Query]) -> list:
    """ConceptsInferred per query from the shipped checkpoint, built by the concepts stage's core."""
    import torch

    from radalign.concepts.checkpoint import load_checkpoint
    from radalign.concepts.data import load_image
    from radalign.concepts.inference import build_concepts_event
    from schemas.events import StudyPreprocessed

    ckpt = load_checkpoint()
    model = ckpt.build_model()
    supported = [o.value for o, ok in zip(OBSERVATIONS, ckpt.head.supported.tolist(), strict=True) if ok]
    events = []
    with torch.inference_mode():
        for i in range(0, len(queries), 16):
            batch = queries[i : i + 16]
            images = torch.from_numpy(np.stack([load_image(q.image) for q in batch]))
            probabilities, embeddings = model(images)
            for j, q in enumerate(batch):
                study = StudyRef(study_key=f"st-{i + j:016x}", patient_key=f"pt-nih{int(q.patient):012d}",
                                 received_at=datetime.now(UTC), pipeline_version="bench")
                pre = StudyPreprocessed.model_construct(study=study, view_position="PA", lateral_only=False, timings=[])
                events.append(build_concepts_event(pre, probabilities[j].numpy(), embeddings[j].numpy(), model_version=ckpt.version,
                                                   supported=supported))
    return events, ckpt.version


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


def bootstrap(per_query: dict[str, np.ndarray], patients: list[str], n: int = 1000, seed: int = 0) -> dict:
    """Means with 95 % CIs resampling patients, and paired ratios / differences to random."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(patients):
        groups.setdefault(p, []).append(i)
    members = list(groups.values())
    draws = {m: [] for m in per_query}
    ratio = {m: [] for m in per_query}
    diff = {m: [] for m in per_query}
    vs_today = {m: [] for m in per_query}
    for _ in range(n):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(members), len(members))])
        base = per_query["random"][idx].mean()
        for m, values in per_query.items():
            mean = values[idx].mean()
            draws[m].append(mean)
            ratio[m].append(mean / base if base > 0 else math.nan)
            diff[m].append(mean - base)
            vs_today[m].append(mean - per_query["today"][idx].mean())
    out = {}
    for m, values in per_query.items():
        out[m] = {
            "mean": float(values.mean()), "ci": [float(np.percentile(draws[m], 2.5)), float(np.percentile(draws[m], 97.5))],
            "ratio_to_random": float(values.mean() / per_query["random"].mean()),
            "ratio_ci": [float(np.nanpercentile(ratio[m], 2.5)), float(np.nanpercentile(ratio[m], 97.5))],
            "diff_ci": [float(np.percentile(diff[m], 2.5)), float(np.percentile(diff[m], 97.5))],
            "minus_today_ci": [float(np.percentile(vs_today[m], 2.5)), float(np.percentile(vs_today[m], 97.5))],
        }
    return out


async def run_split(store, settings, queries, events, all_cases, rng) -> tuple[dict, dict, float]:
    from radalign.retrieval.core import retrieve, retrieve_by_embedding

    per_query = {m: {"jaccard": [], "hit": []} for m in METHODS}
    profile_s = []
    for query, event in zip(queries, events, strict=True):
        retrieved = {}
        draws = [rng.sample(all_cases, K) for _ in range(20)]
        random_scores = np.array([scores(query, [positives_of_case(v) for v in draw]) for draw in draws]).mean(axis=0)
        retrieved["embedding"] = await retrieve_by_embedding(store, event, settings, label_weight=0.0)
        retrieved["today"] = await retrieve_by_embedding(store, event, settings, label_weight=0.5)
        t0 = time.perf_counter()
        retrieved["profile"] = await retrieve(store, event, settings)
        profile_s.append(time.perf_counter() - t0)
        retrieved["profile+emb"] = await retrieve(store, event, settings.model_copy(update={"retrieval_embedding_weight": FUSED_WEIGHT}))
        oracle = [
            ConceptScore(observation=o, probability=0.95 if v else 0.05, state=Certainty.PRESENT if v else Certainty.ABSENT)
            for o, v in query.truth.items()
        ]
        retrieved["oracle-profile"] = await retrieve(store, event.model_copy(update={"concepts": oracle, "not_assessed": []}), settings)
        per_query["random"]["jaccard"].append(random_scores[0])
        per_query["random"]["hit"].append(random_scores[1])
        for method, cases in retrieved.items():
            labels = [positives_of_case(all_labels[c.case_key]) for c in cases]
            j, h = scores(query, labels)
            per_query[method]["jaccard"].append(j)
            per_query[method]["hit"].append(h)
    patients = [q.patient for q in queries]
    result = {metric: bootstrap({m: np.array(v[metric]) for m, v in per_query.items()}, patients) for metric in ("jaccard", "hit")}
    return result, {m: len(v["jaccard"]) for m, v in per_query.items()}, float(np.median(profile_s) * 1000)


all_labels: dict[str, tuple] = {}


async def main_async(args) -> int:
    from radalign.config import Settings
    from radalign.kb.ingest import (
        IU_SOURCE,
        IngestReport,
        default_label_fn,
        ingest_drafts,
        iu_drafts,
    )
    from radalign.kb.store import CaseStore

    queries = load_queries(args.data)
    print(f"queries: val {len(queries['val'])}, test {len(queries['test'])} images (nih-cxr800, split by patient)")
    t0 = time.perf_counter()
    predictions = {name: predict(q) for name, q in queries.items()}
    version = predictions["test"][1]
    print(f"concept model {version}: predicted {sum(len(q) for q in queries.values())} images in {time.perf_counter() - t0:.1f} s")
    settings = Settings(database_url=args.dsn) if args.dsn else args.settings
    async with await CaseStore.open(settings) as store:
        report = IngestReport(IU_SOURCE)
        drafts = iu_drafts(settings.deid_secret, default_label_fn(), report=report)
        await ingest_drafts(store, drafts, with_images=False, progress=True, report=report)
        print(report.summary())
        async with store._pool.connection() as conn:
            rows = await (await conn.execute("SELECT case_key, label_vector FROM cases WHERE source = %s", (IU_SOURCE,))).fetchall()
        all_labels.update({k: tuple(v) for k, v in rows})
        all_cases = [all_labels[k] for k in sorted(all_labels)]
        rng = random.Random(0)
        out = {"model_version": version, "cases": len(all_labels)}
        for name in ("val", "test"):
            events = predictions[name][0]
            abstained = sum(e.ood is not None or not e.concepts for e in events)
            result, _counts, latency_ms = await run_split(store, settings, queries[name], events, all_cases, rng)
            out[name] = {"result": result, "n": len(events), "abstained": abstained, "profile_p50_ms": latency_ms}
    decision = out["val"]["result"]["jaccard"]["embedding"]["diff_ci"][0] > 0
    out["fuse_embedding"] = decision
    for name in ("val", "test"):
        print(f"\n{name}: {out[name]['n']} images, {out[name]['abstained']} abstained; profile retrieval p50 {out[name]['profile_p50_ms']:.1f} ms")
        print(f"{'method':<13}{'jaccard [95% CI]':>26}{'x random [95% CI]':>26}{'hit [95% CI]':>26}{'x random':>10}")
        for m in METHODS:
            j, h = out[name]["result"]["jaccard"][m], out[name]["result"]["hit"][m]
            print(
                f"{m:<13}{j['mean']:>8.3f} [{j['ci'][0]:.3f}, {j['ci'][1]:.3f}]"
                f"{j['ratio_to_random']:>10.2f} [{j['ratio_ci'][0]:.2f}, {j['ratio_ci'][1]:.2f}]"
                f"{h['mean']:>10.3f} [{h['ci'][0]:.3f}, {h['ci'][1]:.3f}]{h['ratio_to_random']:>10.2f}"
            )
    val_emb = out["val"]["result"]["jaccard"]["embedding"]
    print(
        f"\ndecision (val only): embedding minus random jaccard 95% CI [{val_emb['diff_ci'][0]:+.3f}, {val_emb['diff_ci'][1]:+.3f}] -> "
        + (f"fuse the embedding (weight {FUSED_WEIGHT})" if decision else "embedding weight 0 (no better than chance)")
    )
    test = out["test"]["result"]["jaccard"]["profile"]
    low, high = test["minus_today_ci"]
    print(f"profile minus today's retrieval, test jaccard: {test['mean'] - out['test']['result']['jaccard']['today']['mean']:+.3f} "
          f"[95% CI {low:+.3f}, {high:+.3f}] (paired)")
    print(f"target: profile top-5 jaccard {test['ratio_to_random']:.2f}x random on test (goal >= 1.5x)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "nih-cxr800")
    parser.add_argument("--dsn", help="a PostgreSQL with pgvector and the migrations (default: a private embedded one)")
    parser.add_argument("--out", help="write the figures as JSON")
    parser.add_argument("--state", type=Path, help="reuse this embedded stack state folder (keeps the embedded IU cases)")
    args = parser.parse_args()
    if not (args.data / "metadata.csv").is_file():
        print(f"nih-cxr800 not found at {args.data}", file=sys.stderr)
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

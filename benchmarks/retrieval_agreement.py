"""Do the retrieved cases agree with the query's findings? IU reports, with and without re-ranking.

Each IU report in turn is the query; every other report is the case store (its own patient is
excluded, as in production). Candidates are the exact cosine top-40 (`retrieval_candidates`;
HNSW recall is measured separately by pgvector_bench.py), then `radalign.retrieval.core.rerank`
picks k=5 at several label weights (w=0: cosine only, no re-ranking).

Query conditions (embedding / predicted states):
- report:    the report's own text embedding  / its own labels (oracle)
- labels:    embedding of a sentence written from its labels ("Cardiomegaly. No pneumothorax.")
             / its own labels
- noisy-*:   probabilities perturbed (Gaussian, sd 0.2) and states re-thresholded, a share of the
             committed states flipped, and the embedding pushed away from the report's (cosine
             ~0.7 to the original), as an imperfect image model would produce

Metrics over the top-5 against the query's TRUE labels:
- agree:     label agreement (the re-ranking rule, with the true labels as the prediction)
- pos-hit:   for each observation the query has present (No Finding excluded), share of the
             top-5 that have it present (queries with at least one such finding)
- same-set:  share of the top-5 whose set of present observations equals the query's
- conflict:  mean observations per case labelled present in one and absent/unmentioned in the other

    .venv/bin/python benchmarks/retrieval_agreement.py [--queries 1500] [--weights 0,0.3,0.5,0.7]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from radalign.kb.case import Candidate, report_text
from radalign.kb.labels import OBSERVATIONS, encode_label_vector
from radalign.retrieval.core import rerank
from schemas.events import Certainty, ConceptScore, Observation

K = 5
N_CANDIDATES = 40
PRESENT_P, ABSENT_P, UNCERTAIN_P, UNMENTIONED_P = 0.9, 0.1, 0.5, 0.15
HI, LO = 0.6, 0.4  # thresholds that turn a perturbed probability back into a state


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def label_sentence(labels: dict) -> str:
    """A short report written from labels only (what a concept-only query 'says')."""
    parts = []
    for o in OBSERVATIONS:
        state = labels.get(o)
        if o is Observation.NO_FINDING:
            continue
        if state is Certainty.PRESENT:
            parts.append(f"{o.value}.")
        elif state is Certainty.UNCERTAIN:
            parts.append(f"Possible {o.value.lower()}.")
        elif state is Certainty.ABSENT:
            parts.append(f"No {o.value.lower()}.")
    if labels.get(Observation.NO_FINDING) is Certainty.PRESENT or not parts:
        parts.insert(0, "No acute cardiopulmonary abnormality.")
    return " ".join(parts)


def predicted_from_labels(labels: dict) -> list[ConceptScore]:
    """The 14 scores a perfect concept model would emit (unmentioned -> absent, low p)."""
    p_of = {Certainty.PRESENT: PRESENT_P, Certainty.ABSENT: ABSENT_P, Certainty.UNCERTAIN: UNCERTAIN_P}
    out = []
    for o in OBSERVATIONS:
        state = labels.get(o, Certainty.ABSENT)
        p = p_of[state] if o in labels else UNMENTIONED_P
        out.append(ConceptScore(observation=o, probability=p, state=state))
    return out


def perturb(scores: list[ConceptScore], rng: np.random.Generator, sd: float, flip: float) -> list[ConceptScore]:
    out = []
    for s in scores:
        p = float(np.clip(s.probability + rng.normal(0, sd), 0.0, 1.0))
        if rng.random() < flip:
            p = 1.0 - p
        state = Certainty.PRESENT if p >= HI else Certainty.ABSENT if p <= LO else Certainty.UNCERTAIN
        out.append(ConceptScore(observation=s.observation, probability=p, state=state))
    return out


def noisy_embedding(e: np.ndarray, rng: np.random.Generator, target_cos: float) -> np.ndarray:
    noise = rng.normal(size=e.shape)
    noise -= (noise @ e) * e
    noise /= np.linalg.norm(noise)
    v = target_cos * e + np.sqrt(1 - target_cos**2) * noise
    return (v / np.linalg.norm(v)).astype(np.float32)


def embeddings_from_store(dsn: str, case_keys: list[str]) -> np.ndarray:
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(dsn) as conn:
        register_vector(conn)
        rows = dict(conn.execute("SELECT case_key, text_embedding FROM cases WHERE case_key = ANY(%s)", (case_keys,)).fetchall())
    missing = [k for k in case_keys if k not in rows]
    if missing:
        raise SystemExit(f"{len(missing)} IU reports are not in the case store: run `radalign kb ingest iu` first")
    # pgvector gives Vector objects (to_numpy) or arrays, depending on the registered type
    return np.stack([np.asarray(v.to_numpy() if hasattr(v := rows[k], "to_numpy") else v, dtype=np.float32) for k in case_keys])


def metrics(query_vec: tuple, case_vecs: list[tuple], oracle: list[ConceptScore]) -> tuple[float, float | None, float, float]:
    from radalign.retrieval.core import label_agreement

    def positives(v):
        return {i for i, code in enumerate(v) if code == 1 and OBSERVATIONS[i] is not Observation.NO_FINDING}

    q_pos = positives(query_vec)
    q_all = {i for i, code in enumerate(query_vec) if code == 1}
    agree = float(np.mean([label_agreement(v, oracle) for v in case_vecs]))
    pos_hit = float(np.mean([len(q_pos & positives(v)) / len(q_pos) for v in case_vecs])) if q_pos else None
    same = float(np.mean([{i for i, c in enumerate(v) if c == 1} == q_all for v in case_vecs]))
    conflict = float(np.mean([len(q_all ^ {i for i, c in enumerate(v) if c == 1}) for v in case_vecs]))
    return agree, pos_hit, same, conflict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=1500, help="queries sampled from the reports (0: all)")
    parser.add_argument("--weights", default="0,0.3,0.5,0.7")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cache", type=Path, default=Path(".radalign/cache/iu_text_embeddings.npz"),
                        help="embedding cache (outside git; recomputed when the reports or encoder change)")
    parser.add_argument("--dsn", default=None,
                        help="read the IU text embeddings from this case store (after `radalign kb ingest iu`) instead of encoding")
    args = parser.parse_args(argv)
    weights = [float(w) for w in args.weights.split(",")]

    from radalign.labeler import label_sections, load_iu_reports
    from radalign.text_encoder import get_text_encoder

    t0 = time.perf_counter()
    reports = [r for r in load_iu_reports() if (r.findings or r.impression).strip()]
    labels = [dict(label_sections(r.findings, r.impression)) for r in reports]
    vecs = [encode_label_vector(lab) for lab in labels]
    log(f"{len(reports)} IU reports labelled in {time.perf_counter() - t0:.1f} s")

    encoder = get_text_encoder()
    texts = [report_text(r.findings, r.impression) for r in reports]
    key = f"{encoder.name}:" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()
    emb = None
    if args.dsn:
        emb = embeddings_from_store(args.dsn, [f"iu-{r.uid}" for r in reports])
        log(f"read {len(emb)} text embeddings from the case store")
    elif args.cache.is_file():
        cached = np.load(args.cache, allow_pickle=False)
        if str(cached["key"]) == key:
            emb = cached["emb"]
    if emb is None:
        t0 = time.perf_counter()
        emb = encoder.encode(texts, batch_size=64)
        log(f"embedded {len(texts)} reports in {time.perf_counter() - t0:.1f} s")
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.cache, key=np.array(key), emb=emb)
    sentences = [label_sentence(lab) for lab in labels]
    unique = sorted(set(sentences))
    sentence_emb = dict(zip(unique, encoder.encode(unique), strict=True))
    log(f"{len(unique)} distinct label sentences embedded")

    rng = np.random.default_rng(args.seed)
    n = len(reports)
    query_ids = rng.choice(n, size=min(args.queries or n, n), replace=False)
    conditions = [
        ("report", "report", 0.0, 0.0, None),
        ("labels", "labels", 0.0, 0.0, None),
        ("noisy-10%", "report", 0.2, 0.1, 0.7),
        ("noisy-20%", "report", 0.2, 0.2, 0.7),
        ("noisy-20%/labels", "labels", 0.2, 0.2, 0.7),
    ]
    results: dict[tuple[str, float], list[tuple]] = {}
    t0 = time.perf_counter()
    for name, source, sd, flip, emb_cos in conditions:
        crng = np.random.default_rng([args.seed, zlib.crc32(name.encode())])
        for qi in query_ids:
            base = emb[qi] if source == "report" else sentence_emb[sentences[qi]]
            q = base if emb_cos is None else noisy_embedding(base, crng, emb_cos)
            oracle = predicted_from_labels(labels[qi])
            predicted = oracle if flip == 0 and sd == 0 else perturb(oracle, crng, sd, flip)
            sims = emb @ q
            sims[qi] = -np.inf  # the query's own patient
            top = np.argpartition(-sims, N_CANDIDATES)[:N_CANDIDATES]
            candidates = [
                Candidate(case_key=str(j), findings=reports[j].findings, impression=reports[j].impression,
                          label_vector=vecs[j], similarity=float(sims[j]))
                for j in top
            ]
            for w in weights:
                chosen = rerank(candidates, predicted, K, w)
                results.setdefault((name, w), []).append(metrics(vecs[qi], [vecs[int(c.case_key)] for c in chosen], oracle))
        log(f"condition {name}: done ({time.perf_counter() - t0:.0f} s)")

    print(f"\n{len(query_ids)} queries over {n} IU reports; top-{K} of {N_CANDIDATES} cosine candidates; w = label weight (0: no re-ranking)\n")
    header = f"{'query':<18} {'w':>4} {'agree':>7} {'pos-hit':>8} {'same-set':>9} {'conflict':>9}"
    print(header)
    print("-" * len(header))
    for name, *_ in conditions:
        for w in weights:
            rows = results[(name, w)]
            agree = np.mean([r[0] for r in rows])
            pos = np.mean([r[1] for r in rows if r[1] is not None])
            same = np.mean([r[2] for r in rows])
            conflict = np.mean([r[3] for r in rows])
            print(f"{name:<18} {w:>4.1f} {agree:>7.3f} {pos:>8.3f} {same:>9.3f} {conflict:>9.2f}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

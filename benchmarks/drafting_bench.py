"""Drafting benchmark: per backend, raw generation latency and tokens/s, the guard's cost, and
the core's reports per minute (prompt + generation + guard + regeneration/fallback), side by side
in the same run, on real IU report text (held-out reports' labels as the predicted concepts,
label-agreeing reports of the other half as the retrieved cases).

    .venv/bin/python benchmarks/drafting_bench.py                      # deterministic + embedded Gemma if installed
    .venv/bin/python benchmarks/drafting_bench.py --llm-n 8 --form completion
    .venv/bin/python benchmarks/drafting_bench.py --openai-url http://127.0.0.1:8000/v1 --openai-model m
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime

from radalign.config import Settings
from radalign.drafting.backends import DraftBackend, DraftBackendError, LlamaCppBackend, OpenAICompatibleBackend, llama_cpp_available
from radalign.drafting.context import DraftContext
from radalign.drafting.core import DraftingCore
from radalign.drafting.deterministic import DeterministicDrafter
from radalign.drafting.guard import check_draft
from radalign.drafting.labels import default_labeler
from radalign.drafting.prompt import build_prompt
from radalign.labeler import label_sections, load_iu_reports
from schemas.events import CasesRetrieved, Certainty, ConceptScore, Observation, RetrievedCase, StudyRef

_P = {Certainty.PRESENT: 0.85, Certainty.UNCERTAIN: 0.5, Certainty.ABSENT: 0.08}


def build_events(n: int, seed: int, k: int = 3) -> list[CasesRetrieved]:
    reports = [r for r in load_iu_reports() if r.findings and r.impression]
    labelled = [(r, label_sections(r.findings, r.impression)) for r in reports]
    half = len(labelled) // 2
    kb, held_out = labelled[:half], labelled[half:]
    rng = random.Random(seed)
    events = []
    for index, (_, labels) in enumerate(rng.sample(held_out, n)):
        pool = rng.sample(kb, 60)

        def agreement(item: tuple, labels: dict = labels) -> float:
            keys = set(labels) | set(item[1])
            return sum(labels.get(o) == item[1].get(o) for o in keys) / max(1, len(keys))

        pool.sort(key=agreement, reverse=True)
        concepts = [ConceptScore(observation=o, probability=_P[c], state=c) for o, c in labels.items()] or [
            ConceptScore(observation=Observation.NO_FINDING, probability=0.9, state=Certainty.PRESENT)
        ]
        events.append(
            CasesRetrieved(
                study=StudyRef(study_key=f"st-{index:016x}", patient_key=f"pt-{index:016x}", received_at=datetime.now(UTC), pipeline_version="bench"),
                view_position="PA", concepts=concepts, model_name="bench", model_version="1", retrieval_version="bench",
                cases=[
                    RetrievedCase(case_key=r.uid, similarity=0.8, label_agreement=agreement((r, labels)), score=1.0 - 0.01 * i, findings=r.findings, impression=r.impression)
                    for i, (r, labels) in enumerate(pool[:k])
                ],
            )
        )
    return events


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) >= 2 else (values[0] if values else float("nan"))


async def bench_backend(name: str, backend: DraftBackend | None, events: list[CasesRetrieved], settings: Settings) -> dict:
    labeler = default_labeler()
    form = settings.llm_prompt_form
    # 1. raw generation: one call per study, no guard
    latencies, tokens, prompt_tokens, token_time, failures = [], 0, 0, 0.0, Counter()
    drafter = backend or DeterministicDrafter(labeler)
    if backend is None:
        # warm the labeler's sentence cache, so the raw and core passes below see the same state
        for event in events:
            drafter.draft(DraftContext.from_event(event, max_cases=settings.drafting_max_cases))
    drafts = []
    raw_started = time.perf_counter()
    for event in events:
        prompt = build_prompt(DraftContext.from_event(event, max_cases=settings.drafting_max_cases), form=form,
                              max_tokens=settings.llm_max_tokens, labeler=labeler if form == "completion" else None)
        started = time.perf_counter()
        try:
            draft = await drafter.generate(prompt)
        except DraftBackendError as exc:
            failures[exc.reason] += 1
            continue
        latencies.append(time.perf_counter() - started)
        tokens += draft.completion_tokens
        prompt_tokens += draft.prompt_tokens
        token_time += draft.elapsed_s
        drafts.append((draft, DraftContext.from_event(event).prediction))
    raw_elapsed = time.perf_counter() - raw_started
    # 2. the guard's cost: labelling and comparing one draft
    guard_times = []
    for _ in range(3 if len(drafts) < 50 else 1):
        for draft, prediction in drafts:
            started = time.perf_counter()
            check_draft(draft.findings, draft.impression, prediction, labeler)
            guard_times.append(time.perf_counter() - started)
    # 3. the core: prompt, generation, guard, regeneration or fallback, event assembly
    core = DraftingCore(settings, backend, labeler=labeler)
    verdicts, drafters, reasons = Counter(), Counter(), Counter()
    core_started = time.perf_counter()
    for event in events:
        report = await core.draft(event)
        verdicts[report.guard.verdict.value] += 1
        drafters[report.drafter] += 1
        for reason in sorted({r.reason for r in report.guard.rejections}):
            reasons[reason] += 1  # drafts the guard rejected, by reason
    core_elapsed = time.perf_counter() - core_started
    return {
        "backend": name, "n": len(events),
        "gen_p50_ms": 1000 * pct(latencies, 50), "gen_p95_ms": 1000 * pct(latencies, 95),
        "tokens_per_s": tokens / token_time if token_time and tokens else float("nan"),
        "raw_per_min": 60 * len(latencies) / raw_elapsed if raw_elapsed else float("nan"),
        "guard_p50_ms": 1000 * pct(guard_times, 50), "guard_p95_ms": 1000 * pct(guard_times, 95),
        "core_per_min": 60 * len(events) / core_elapsed, "verdicts": dict(verdicts), "drafters": dict(drafters), "reasons": dict(reasons),
        "raw_failures": dict(failures), "prompt_tokens": prompt_tokens / max(1, len(latencies)),
        "completion_tokens": tokens / max(1, len(latencies)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="studies for the deterministic drafter")
    parser.add_argument("--llm-n", type=int, default=4, help="studies for each LLM backend")
    parser.add_argument("--form", choices=["chat", "completion"], default="completion", help="prompt form for LLMs")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-llama", action="store_true", help="skip the embedded llama.cpp backend")
    parser.add_argument("--openai-url", default="", help="an OpenAI-compatible endpoint to measure as well")
    parser.add_argument("--openai-model", default="gemma-3-270m")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    settings = Settings(llm_prompt_form=args.form, llm_max_tokens=args.max_tokens, llm_timeout_s=180)
    started = time.perf_counter()
    events = build_events(max(args.n, args.llm_n), args.seed)
    print(f"{len(events)} IU studies prepared in {time.perf_counter() - started:.1f} s (labels as predictions, 3 retrieved cases)")
    results = [await bench_backend("deterministic", None, events[: args.n], settings)]
    if not args.no_llama:
        if llama_cpp_available():
            load = time.perf_counter()
            llama = LlamaCppBackend(timeout_s=180)
            print(f"llama.cpp: Gemma-3-270M loaded in {time.perf_counter() - load:.1f} s")
            results.append(await bench_backend(llama.name, llama, events[: args.llm_n], settings))
        else:
            print("llama.cpp: llama_cpp not importable, skipped")
    if args.openai_url:
        async with OpenAICompatibleBackend(args.openai_url, args.openai_model, timeout_s=180, max_retries=1, concurrency=1) as backend:
            results.append(await bench_backend(backend.name, backend, events[: args.llm_n], settings))

    header = f"{'backend':<26}{'n':>5}{'gen p50 ms':>12}{'gen p95 ms':>12}{'tok/s':>8}{'raw/min':>10}{'guard p50 ms':>14}{'guard p95 ms':>14}{'core/min':>10}  core/raw"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        ratio = r["core_per_min"] / r["raw_per_min"] if r["raw_per_min"] == r["raw_per_min"] and r["raw_per_min"] else float("nan")
        print(f"{r['backend']:<26}{r['n']:>5}{r['gen_p50_ms']:>12.1f}{r['gen_p95_ms']:>12.1f}{r['tokens_per_s']:>8.1f}{r['raw_per_min']:>10.1f}"
              f"{r['guard_p50_ms']:>14.2f}{r['guard_p95_ms']:>14.2f}{r['core_per_min']:>10.1f}  {ratio:.2f}")
    for r in results:
        print(f"{r['backend']}: guard verdicts {r['verdicts']}, written by {r['drafters']}, raw failures {r['raw_failures'] or 'none'}, "
              f"mean tokens prompt {r['prompt_tokens']:.0f} / completion {r['completion_tokens']:.0f}, "
              f"guard = {100 * r['guard_p50_ms'] / r['gen_p50_ms']:.2g} % of a median generation")
        if r["reasons"]:
            print(f"  drafts rejected by the guard, by reason: {r['reasons']}")
    print("tok/s: completion tokens over generation time including prompt evaluation (one request at a time).")


if __name__ == "__main__":
    asyncio.run(main())

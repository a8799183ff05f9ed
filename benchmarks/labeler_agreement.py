"""Agreement of the rule-based labeler with the IU reports' MeSH indexing (dev and held-out halves).

    .venv/bin/python benchmarks/labeler_agreement.py [--disagreements N]

The rules were tuned on the dev half only; the held-out figures are the honest ones.
"""

from __future__ import annotations

import argparse
import sys
import time

from radalign.labeler.evaluate import evaluate, format_table
from radalign.labeler.iu import iu_archive_path, load_iu_reports


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--disagreements", type=int, default=3, help="disagreements to list per target (held-out)")
    args = parser.parse_args()
    if iu_archive_path() is None:
        print("IU reports not found: install torchxrayvision==1.5.7 --no-deps", file=sys.stderr)
        return 2
    reports = load_iu_reports()
    started = time.perf_counter()
    results = [evaluate(reports, split) for split in ("dev", "heldout")]
    elapsed = time.perf_counter() - started
    for agreement in results:
        print(format_table(agreement))
        print()
    heldout = results[1]
    print("targets with a goal (held-out):")
    for score in heldout.scores.values():
        if score.goal_f1 is not None:
            verdict = "meets" if score.f1 >= score.goal_f1 else "BELOW"
            print(f"  {score.name:<22} F1 {score.f1:.3f} {verdict} goal {score.goal_f1:.2f}")
    if args.disagreements:
        print(f"\nheld-out disagreements (first {args.disagreements} per target, uid order):")
        shown: dict[str, int] = {}
        for d in heldout.disagreements:
            if shown.get(d.target, 0) >= args.disagreements:
                continue
            shown[d.target] = shown.get(d.target, 0) + 1
            phrases = "; ".join(f"{m.certainty.value}:{m.phrase!r}" for m in d.mentions) or "(no mention)"
            print(f"  {d.target:<20} {d.kind:<15} {d.uid:<8} mesh={list(d.mesh_terms)} labeler={phrases}")
    print(f"\nlabelled and scored {sum(a.n_reports for a in results)} reports in {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

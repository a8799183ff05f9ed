#!/usr/bin/env python
"""Fault-injection soak: the fault table on a private embedded stack, one row per fault, counted
at every sink (report topic, PACS, FHIR server). Exits 1 on any loss or duplicate at any sink.

    .venv/bin/python benchmarks/soak.py                       # every fault, 40 studies each (~25 min on 2 cores)
    .venv/bin/python benchmarks/soak.py --short               # the CI subset, 8 studies each
    .venv/bin/python benchmarks/soak.py --faults broker_kill9 --studies 20

See radalign/stack/soak.py for what each column counts.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from radalign.stack.soak import FAULTS, PACS_FAULTS, SHORT_FAULTS, run_fault, start_stack, table
from radalign.testing.stack import short_state_dir, stack_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faults", nargs="*", choices=FAULTS, help="default: all (or the CI subset with --short)")
    parser.add_argument("--short", action="store_true", help="the CI subset with small batches")
    parser.add_argument("--studies", type=int, help="studies per fault (default 40, 8 with --short; random_kills sends 3x)")
    parser.add_argument("--outage-s", type=float, help="Triton / PostgreSQL / frozen PACS outage (default 20 / 12 / 60 s, 6 s with --short)")
    parser.add_argument("--cases", type=int, default=300, help="IU reports in the case store")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    faults = args.faults or (SHORT_FAULTS if args.short else FAULTS)
    studies = args.studies or (8 if args.short else 40)
    token = "soak-token"
    state_dir = short_state_dir("radalign-soak-")
    settings = stack_settings(state_dir, gateway_tokens=token, deid_secret="soak-secret-" + "x" * 24)

    def log(message: str) -> None:
        print(f"  {time.strftime('%H:%M:%S')} {message}", flush=True)

    from radalign.stack import down

    results = []
    stack = None
    try:
        stack = start_stack(settings, args.cases, log)
        for fault in faults:
            if fault in PACS_FAULTS and stack.pacs_url is None:
                log(f"fault {fault}: skipped, Orthanc is not installed")
                continue
            default = {"triton_down": 20.0, "pacs_sigstop": 60.0}.get(fault, 12.0)
            outage = args.outage_s or (6.0 if args.short else default)
            n = studies * 3 if fault == "random_kills" else studies
            log(f"fault {fault}: {n} studies")
            result = run_fault(stack, fault, n, outage_s=outage, token=token, log=log)
            log(f"  -> accepted {result.accepted}, reported {result.reported}, lost {result.lost}, duplicated {result.duplicated}")
            results.append(result)
    finally:
        print(table(results), flush=True)
        if stack is not None:
            stack.stop()
        if not args.keep:
            down(settings)
            shutil.rmtree(state_dir, ignore_errors=True)
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

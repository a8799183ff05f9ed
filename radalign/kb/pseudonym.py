"""Pseudonyms for provider identifiers (patient ids, case ids) before anything is stored.

The same scheme as the gateway (`radalign.ingest.deid.Pseudonymizer`): HMAC-SHA256 keyed with
`settings.deid_secret` over `"<kind>\\0<identifier>"`, the first 16 hex digits behind a prefix.
It must stay identical, or same-patient exclusion could never match a live study's patient_key
to a stored case (tests/unit/kb/test_pseudonym.py checks both agree). Kept here as well so that
ingesting cases does not depend on the DICOM stack.

Stable across runs (re-ingesting maps a patient to the same key), not reversible or recomputable
without the secret; 64 bits keep collisions improbable far beyond any case store's size.
"""

from __future__ import annotations

import hashlib
import hmac

PATIENT_PREFIX = "pt"
CASE_PREFIX = "case"


def pseudonymise(identifier: str, secret: str, *, kind: str, prefix: str) -> str:
    """`<prefix>-<16 hex>` from HMAC-SHA256(secret, kind NUL identifier)."""
    value = identifier.strip()
    if not value:
        raise ValueError("cannot pseudonymise an empty identifier")
    if not secret:
        raise ValueError("the pseudonym secret (RADALIGN_DEID_SECRET) is empty")
    digest = hmac.new(secret.encode("utf-8"), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"{prefix}-{digest[:16]}"


def patient_key(patient_id: str, secret: str) -> str:
    """The pseudonymous patient key (`pt-<hex16>`), equal to the gateway's for the same id."""
    return pseudonymise(patient_id, secret, kind="patient", prefix=PATIENT_PREFIX)


def case_key(source: str, case_id: str, secret: str) -> str:
    """The pseudonymous key of a provider's case (`case-<hex16>`), namespaced by corpus: a
    provider's case id may be an accession number, which must not travel in events."""
    return pseudonymise(case_id, secret, kind=f"case:{source}", prefix=CASE_PREFIX)

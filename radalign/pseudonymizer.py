"""The one place pseudonymous keys are derived: patients, studies, instances, UIDs and cases.

Every writer of a patient key calls `Pseudonymizer.patient_key(patient_id, issuer)`: the gateway
(C-STORE, STOW-RS and the HTTP form, `radalign/ingest/gateway.py`), `radalign kb ingest` and every
case-store loader (`radalign/kb/ingest.py`). Same-patient exclusion at retrieval compares a live
study's patient key with the stored cases' keys, so two code paths that hash a patient
differently would silently let a study retrieve its own prior report (issue 11: "http|<id>"
against "<id>" did exactly that).

A patient is identified by (issuer, patient id): the issuer is the namespace of the id (a
hospital's MRN system, DICOM's IssuerOfPatientID), so MRN 1234 at two hospitals are two patients.

    key = "pt-" + hex16( HMAC-SHA256( secret, "patient" NUL canonical_issuer "|" patient_id ) )

- `canonical_issuer`: stripped, inner whitespace collapsed, upper-cased ("hosp a " == "HOSP A");
  an empty issuer becomes the default one, so "no issuer" is never its own silent namespace.
- `patient_id`: stripped, otherwise exact (MRNs can be case-sensitive).
- A study without a patient id stands for its own patient (`unidentified_patient_key`): two such
  studies are never linked, and never linked to a named patient.

Which issuer applies (`IssuerPolicy`, from settings): a configured issuer for the sending source
wins (`RADALIGN_PATIENT_ISSUERS`, per calling AE title or per protocol), then the issuer the object
declares (IssuerOfPatientID, or the HTTP form's `issuer`), then `RADALIGN_PATIENT_ISSUER`. A
provider loading its archive passes the same issuer (`radalign kb ingest csv --issuer`, or an
`issuer` column).

The sending site (issue 9): the concept stage applies a site's audit profile (`radalign audit
--site NAME`) to that site's studies. A study's site is the issuer *configured* for its source in
`RADALIGN_PATIENT_ISSUERS` (per calling AE title, then per protocol), as a site name
(`site_name`: the canonical issuer, characters other than letters, digits, '.', '_', '-' turned
into '-'): "dicom-cstore:PACS_A=HOSP-A" makes every study PACS_A sends a HOSP-A study. What an
object declares (IssuerOfPatientID, the HTTP form's `issuer`) never picks a site: the sender
would then choose which calibration its films get. No configured issuer: no site (the concept
stage falls back to `RADALIGN_CONCEPTS_DEFAULT_SITE`, then to the shipped gate). A site name is
a namespace, never a patient identifier.

HMAC keyed with `settings.deid_secret`: stable across runs, not reversible or recomputable without
the secret; 64 bits keep collisions improbable far beyond any case store's size. Standard library
only, so loaders need neither pydicom nor the gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from radalign.config import Settings, csv_list

PATIENT_PREFIX = "pt"
STUDY_PREFIX = "st"
INSTANCE_PREFIX = "in"
CASE_PREFIX = "case"
#: The issuer used when neither the source configuration nor the object names one.
DEFAULT_ISSUER = "LOCAL"
#: Sources of the gateway, as `radalign.ingest.assembly.Source` names them.
GATEWAY_SOURCES = ("dicom-cstore", "dicomweb-stow", "http")


def site_name(issuer: str | None) -> str | None:
    """The site name of a configured issuer: `"hosp a"` -> `"HOSP-A"`; None when nothing is left.
    Always matches the contracts' site pattern (`StudyReceived.site`, `radalign audit --site`)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", " ".join((issuer or "").split()).upper())
    value = re.sub(r"^[^A-Za-z0-9]+", "", value)[:64]
    return value or None


def canonical_issuer(issuer: str | None, default: str = DEFAULT_ISSUER) -> str:
    """`" hosp  a"` -> `"HOSP A"`; empty -> the canonical `default`."""
    value = " ".join((issuer or "").split()).upper()
    if value:
        return value
    fallback = " ".join(default.split()).upper()
    if not fallback:
        raise ValueError("the default patient issuer is empty")
    return fallback


class Pseudonymizer:
    """Keys that match the contracts' key pattern (`st-`, `pt-`, `in-`, `case-` + 16 hex digits)."""

    def __init__(self, secret: str, default_issuer: str = DEFAULT_ISSUER) -> None:
        if not secret or not secret.strip():
            raise ValueError("the pseudonym secret (RADALIGN_DEID_SECRET) must not be empty")
        self._key = secret.encode("utf-8")
        self.default_issuer = canonical_issuer(default_issuer)

    def _digest(self, kind: str, value: str) -> str:
        return hmac.new(self._key, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()

    def patient_key(self, patient_id: str, issuer: str | None) -> str:
        """The patient key of `patient_id` in `issuer`'s namespace (the one pseudonymising function)."""
        value = (patient_id or "").strip()
        if not value:
            raise ValueError("cannot pseudonymise an empty patient id (use unidentified_patient_key)")
        return f"{PATIENT_PREFIX}-" + self._digest("patient", f"{canonical_issuer(issuer, self.default_issuer)}|{value}")[:16]

    def unidentified_patient_key(self, study_ref: str, issuer: str | None) -> str:
        """A patient key for a study that names no patient: unique to that study."""
        value = (study_ref or "").strip()
        if not value:
            raise ValueError("an unidentified patient needs a study reference")
        return f"{PATIENT_PREFIX}-" + self._digest("patient-unidentified", f"{canonical_issuer(issuer, self.default_issuer)}|{value}")[:16]

    def study_key(self, study_uid: str) -> str:
        return f"{STUDY_PREFIX}-" + self._digest("study", study_uid)[:16]

    def instance_key(self, sop_instance_uid: str) -> str:
        return f"{INSTANCE_PREFIX}-" + self._digest("instance", sop_instance_uid)[:16]

    def uid(self, kind: str, value: str) -> str:
        """A pseudonymous UID under the 2.25 (UUID-derived) root, stable per original UID."""
        return "2.25." + str(int(self._digest(f"uid:{kind}", value)[:32], 16))

    def reviewer_key(self, login: str) -> str:
        """The pseudonym of a signing radiologist (`rd-` + 16 hex): who signed travels in events
        without the login itself."""
        value = (login or "").strip()
        if not value:
            raise ValueError("cannot pseudonymise an empty login")
        return "rd-" + self._digest("reviewer", value)[:16]

    def case_key(self, source: str, case_id: str) -> str:
        """The key of a provider's case, namespaced by corpus: a case id may be an accession number."""
        value = (case_id or "").strip()
        if not value:
            raise ValueError("cannot pseudonymise an empty case id")
        return f"{CASE_PREFIX}-" + self._digest(f"case:{source}", value)[:16]


def _parse_issuers(spec: str) -> dict[str, str]:
    """`"dicom-cstore:PACS_A=HOSP-A, http=HOSP-B"` -> {source selector: issuer}."""
    mapping: dict[str, str] = {}
    for item in csv_list(spec):
        selector, sep, issuer = item.partition("=")
        selector, issuer = selector.strip(), issuer.strip()
        protocol = selector.split(":", 1)[0]
        if not sep or not selector or not issuer or protocol not in GATEWAY_SOURCES:
            raise ValueError(
                f"RADALIGN_PATIENT_ISSUERS entry {item!r}: expected <source>[:<calling AE>]=<issuer>, "
                f"source one of {', '.join(GATEWAY_SOURCES)}"
            )
        mapping[selector] = issuer
    return mapping


@dataclass(frozen=True)
class IssuerPolicy:
    """Which issuer a received object's patient id belongs to (precedence in the module doc)."""

    default: str = DEFAULT_ISSUER
    #: "dicom-cstore:<calling AE>" or a protocol name -> issuer.
    by_source: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> IssuerPolicy:
        return cls(default=settings.patient_issuer, by_source=_parse_issuers(settings.patient_issuers))

    def _configured(self, source: str, calling_ae: str | None) -> str | None:
        """The issuer configured for the sender (calling AE first, then the protocol), if any."""
        if calling_ae and f"{source}:{calling_ae.strip()}" in self.by_source:
            return self.by_source[f"{source}:{calling_ae.strip()}"]
        return self.by_source.get(source)

    def issuer(self, source: str, *, declared: str | None = None, calling_ae: str | None = None) -> str:
        configured = self._configured(source, calling_ae)
        return canonical_issuer(configured if configured is not None else declared, self.default)

    def issuer_of_site(self, site: str) -> str:
        """The configured issuer whose site name is `site` (a site's archive must be pseudonymised
        in the same namespace as its live studies); `site` itself when none is configured."""
        return next((issuer for issuer in self.by_source.values() if site_name(issuer) == site), site)

    def site(self, source: str, *, calling_ae: str | None = None) -> str | None:
        """The sending site: the issuer configured for this source as a site name; None when the
        configuration names none (a declared issuer never does: module doc)."""
        return site_name(self._configured(source, calling_ae))


def patient_key(patient_id: str, issuer: str | None, secret: str) -> str:
    """Shorthand for loaders: `Pseudonymizer(secret).patient_key(patient_id, issuer)`."""
    return Pseudonymizer(secret).patient_key(patient_id, issuer)


def case_key(source: str, case_id: str, secret: str) -> str:
    return Pseudonymizer(secret).case_key(source, case_id)

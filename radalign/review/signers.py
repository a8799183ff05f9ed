"""Who signed, as the identity provider names them: the reviewer mapping (091 `reviewer_identities`).

Events carry the signer's pseudonym (`ReportFinal.signer_key`, `rd-<hex16>`) and role only. The
review service records pseudonym -> display name and identifier at sign-off; the delivery stage
re-identifies the signer at the output edge, exactly like the patient (FHIR resultsInterpreter /
performer, DICOM SR Verifying Observer and person observer, HL7 OBR-32). A pseudonym never
appears as a signer in a delivered record: without the mapping the delivery refuses the version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

#: Identifier system when the identity provider gives none (dev logins without an IdP).
LOCAL_IDENTIFIER_SYSTEM = "urn:radalign:reviewer"


@dataclass(frozen=True)
class Signer:
    reviewer_key: str
    display_name: str
    identifier: str
    identifier_system: str = LOCAL_IDENTIFIER_SYSTEM
    role: str = "radiologist"
    family_name: str = ""
    given_name: str = ""

    def __post_init__(self) -> None:
        if not self.display_name.strip() or not self.identifier.strip():
            raise ValueError("a signer needs a display name and an identifier")

    @property
    def family(self) -> str:
        """The family name: the IdP's `family_name`, else the last word of the display name."""
        return self.family_name or self.display_name.split()[-1]

    @property
    def given(self) -> str:
        if self.family_name:
            return self.given_name
        words = self.display_name.split()
        return " ".join(words[:-1])

    @property
    def dicom_pn(self) -> str:
        """DICOM PN "Family^Given"."""
        return f"{self.family}^{self.given}" if self.given else self.family


class SignerDirectory(Protocol):
    async def lookup(self, reviewer_key: str) -> Signer | None: ...


class StaticSigners:
    """A fixed mapping (tests, demos)."""

    def __init__(self, signers: Mapping[str, Signer] | None = None) -> None:
        self.signers = dict(signers or {})

    async def lookup(self, reviewer_key: str) -> Signer | None:
        return self.signers.get(reviewer_key)

    async def record(self, signer: Signer) -> None:
        self.signers[signer.reviewer_key] = signer


_UPSERT = """
INSERT INTO reviewer_identities (reviewer_key, display_name, family_name, given_name, identifier, identifier_system, role)
VALUES (%(reviewer_key)s, %(display_name)s, %(family_name)s, %(given_name)s, %(identifier)s, %(identifier_system)s, %(role)s)
ON CONFLICT (reviewer_key) DO UPDATE SET
    display_name = EXCLUDED.display_name, family_name = EXCLUDED.family_name, given_name = EXCLUDED.given_name,
    identifier = EXCLUDED.identifier, identifier_system = EXCLUDED.identifier_system, role = EXCLUDED.role, updated_at = now()
"""
_GET = """
SELECT reviewer_key, display_name, family_name, given_name, identifier, identifier_system, role
FROM reviewer_identities WHERE reviewer_key = %s
"""


class PostgresSigners:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def record(self, signer: Signer) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_UPSERT, signer.__dict__)

    async def lookup(self, reviewer_key: str) -> Signer | None:
        async with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_GET, (reviewer_key,))
            row = await cur.fetchone()
        return Signer(**row) if row else None


@dataclass(frozen=True)
class Signature:
    """A signed version as the outputs need it, re-identified (never a pseudonym): who signed
    (`signer`, and the residents whose preliminary work it co-signs), which version it is and
    which it replaces, and the signed text's labels (the coded results)."""

    version: int
    signer: Signer
    co_signers: tuple[Signer, ...] = ()
    replaces_version: int | None = None
    labels: Mapping[Any, Any] = field(default_factory=dict)  # Observation -> Certainty

    def version_id(self, report_id: str, version: int | None = None) -> str:
        """The signed version's identifier (ReportFinal.final_id)."""
        return f"{report_id}-v{self.version if version is None else version}"

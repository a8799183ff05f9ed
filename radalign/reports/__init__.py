"""Report outputs: what a drafted report becomes when it leaves drafting.

Drafting writes the report; delivery, review and the read API read it through this package:
- `ReportStore(pool)` (`store`): drafted reports in PostgreSQL, idempotent upserts
- re-identification at the output edge (`reidentification`): `Reidentifier`,
  `PostgresReidentifier`, `StaticReidentifier`, `StudyIdentity` (the original identifiers of a
  study; pseudonymising, the other direction, is `radalign.pseudonymizer`)
- `diagnostic_report(...)`, `transaction_bundle(...)` (`fhir`), `basic_text_sr(...)`,
  `ai_results_sr(...)` (`sr`), and the assessment line that ends every delivered text (`assessment`)
Imports below are light (no highdicom): FHIR and SR modules load on first use.
"""

from radalign.reports.reidentification import PostgresReidentifier, Reidentifier, StaticReidentifier, StudyIdentity
from radalign.reports.store import ReportStore

__all__ = ["PostgresReidentifier", "Reidentifier", "ReportStore", "StaticReidentifier", "StudyIdentity"]

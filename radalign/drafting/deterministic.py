"""The structured deterministic drafter: every sentence comes from the concept states.

FINDINGS are written section by section in the order radiologists read a chest film (support
devices; heart and mediastinum; lungs; pleura; bones and soft tissues), IMPRESSION lists the
positive and hedged findings most important first (or says the study is normal), and a footer
names what the model did not assess. For each observation:
- assessed present: stated plainly;
- assessed uncertain (between the calibrated absent and present thresholds): "likely" in the
  upper half of that band, "possible" in the lower half;
- assessed absent: a normal statement (one sentence for a group where it fits: "The lungs are clear.");
- not assessed: nothing at all.
Wording comes from the versioned phrase table (`radalign.drafting.phrases`). With
`borrow_normal_phrasing`, a section that is entirely normal may use a retrieved case's normal
sentence instead, but only one that survives sanitising and that the labeler reads as exactly
the assessed-absent observations of that section. No LLM is involved: the result is
reproducible; it is the fallback whenever the LLM fails and the CI default.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping

from radalign.drafting.backends import DraftText
from radalign.drafting.concepts import Prediction
from radalign.drafting.context import DraftContext, DraftPrompt
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.drafting.phrases import Band, PhraseTable, SectionName, load_phrase_table
from radalign.drafting.sanitise import check_sentence
from radalign.drafting.text import normalise, split_sentences
from radalign.sites.macros import NormalMacro
from schemas.events import Certainty, Observation

NAME = "deterministic"

# A borrowed sentence must read as a normal statement ("The lungs appear clear."), without a
# qualifier that would smuggle in something else ("... but there is scarring").
_NORMAL_STATEMENT = re.compile(
    r"^\W*(?:no|normal|negative|clear|unremarkable)\b"
    r"|\b(?:is|are|appears?|remains?)\s+(?:\w+\s+){0,2}?(?:normal|clear|unremarkable|intact|within\s+normal\s+limits)\b",
    re.IGNORECASE,
)
_QUALIFIER = re.compile(r"\b(?:but|with|except|although|however|though)\b", re.IGNORECASE)


def is_normal_statement(sentence: str) -> bool:
    return bool(_NORMAL_STATEMENT.search(sentence)) and not _QUALIFIER.search(sentence)


def band_of(prediction: Prediction, observation: Observation, table: PhraseTable) -> Band | None:
    """The wording band of an assessed observation from its state and calibrated probability
    (None when it is not assessed)."""
    state = prediction.states.get(observation)
    if state is None:
        return None
    if state is Certainty.PRESENT:
        return "present"
    if state is Certainty.ABSENT:
        return "absent"
    present = prediction.present_thresholds.get(observation, table.present_threshold)
    absent = prediction.absent_thresholds.get(observation, table.absent_threshold)
    probability = prediction.probabilities.get(observation, (present + absent) / 2)
    return "likely" if probability >= (present + absent) / 2 else "possible"


class DeterministicDrafter:
    name = NAME

    def __init__(
        self, labeler: ReportLabeler | None = None, *, phrase_table: PhraseTable | None = None, borrow_normal_phrasing: bool = False,
        normal_macros: Mapping[str, NormalMacro] | None = None,
    ) -> None:
        self._labeler = labeler
        self.table = phrase_table or load_phrase_table()
        self.borrow_normal_phrasing = borrow_normal_phrasing
        #: Site -> the provider's normal report (`radalign.sites.macros`); the phrase table's otherwise.
        self.normal_macros = dict(normal_macros or {})

    @property
    def labeler(self) -> ReportLabeler:
        if self._labeler is None:
            self._labeler = default_labeler()
        return self._labeler

    async def generate(self, prompt: DraftPrompt) -> DraftText:
        return self.draft(prompt.context)

    # -- the draft -----------------------------------------------------------------------------

    def draft(self, context: DraftContext) -> DraftText:
        started = time.perf_counter()
        prediction = context.prediction
        footer = self.footer(prediction)
        if prediction.ood is not None:
            reason = self.table.ood_reasons.get(prediction.ood.reason, prediction.ood.reason.replace("_", " "))
            findings = self.table.impression["ood_findings"].format(reason=reason)
            return DraftText(findings, self.table.impression["ood_impression"], NAME, elapsed_s=time.perf_counter() - started, footer=footer)

        if prediction.likely_normal and not any(s is Certainty.ABSENT for s in prediction.states.values()):
            # a rule-out call and no negative the structured reading could spell out section by
            # section (a site model's likely-normal film): the site's normal report says it
            return self.normal_report(context, footer, started)
        borrowed = self._normal_candidates(context) if self.borrow_normal_phrasing else []
        sections = tuple(
            (name, tuple(sentences))
            for name, _title in self.table.sections
            if (sentences := self.section_sentences(name, prediction, borrowed))
        )
        findings = " ".join(s for _, sentences in sections for s in sentences)
        impression = self.impression(prediction)
        if not findings:  # nothing assessed in any section: the impression says what there is to say
            findings = impression
        return DraftText(findings, impression, NAME, elapsed_s=time.perf_counter() - started, sections=sections, footer=footer)

    def normal_report(self, context: DraftContext, footer: str | None, started: float) -> DraftText:
        """A likely-normal film (No Finding stated at the site's rule-out point): the site's normal
        report, with a finding inserted only where the claim policy let the model state or hedge it."""
        macro = self.normal_macros.get(context.site or "", self.table.normal_macro)
        stated = _findings_only(context.prediction)
        # the macro is one block across sections: the structured sections hold only what was inserted
        sections = tuple((name, tuple(found)) for name, _ in self.table.sections if (found := self.section_sentences(name, stated)))
        inserted = [s for _, found in sections for s in found]
        findings = " ".join([*inserted, macro.findings])
        impression = self.impression(stated) if inserted else macro.impression
        return DraftText(findings, impression, NAME, elapsed_s=time.perf_counter() - started, sections=sections, footer=footer)

    def section_sentences(self, section: SectionName, prediction: Prediction, borrowed: list[tuple[str, frozenset[Observation]]] = ()) -> list[str]:  # type: ignore[assignment]  # an empty tuple default for a read-only sequence
        entries = self.table.in_section(section)
        bands = {p.observation: band_of(prediction, p.observation, self.table) for p in entries}
        sentences = [p.sentence(band) for p in entries if (band := bands[p.observation]) in ("present", "likely", "possible")]
        absent = {o for o, b in bands.items() if b == "absent"}
        if not absent:
            return [s for s in sentences if s]
        covered: set[Observation] = set()
        normal: list[str] = []
        if not sentences and borrowed:
            # A fully normal section may take a retrieved case's (sanitised) normal sentence.
            for sentence, reads_absent in borrowed:
                if reads_absent <= absent and not reads_absent <= covered:
                    normal.append(sentence)
                    covered |= reads_absent
        for group in self.table.absent_groups:
            if group.observations <= absent and not group.observations & covered:
                normal.extend(split_sentences(group.sentence))
                covered |= group.observations
        for p in entries:
            if p.observation in absent and p.observation not in covered and p.absent:
                normal.append(p.absent)
                covered.add(p.observation)
        return [s for s in sentences if s] + normal

    def impression(self, prediction: Prediction) -> str:
        ranked = sorted(
            (
                (0 if band == "present" else 1 if band == "likely" else 2, p.priority, p)
                for o, p in self.table.observations.items()
                if o is not Observation.SUPPORT_DEVICES and (band := band_of(prediction, o, self.table)) in ("present", "likely", "possible")
            ),
            key=lambda item: (item[0], item[1]),  # stated findings first, each band most important first
        )
        if not prediction.states:  # the claim policy left nothing this film may be told
            return self.table.impression["nothing_claimed"]
        if ranked:
            prefix = {0: "", 1: self.table.impression["likely_prefix"] + " ", 2: self.table.impression["possible_prefix"] + " "}
            return " ".join(_sentence_case(prefix[rank] + p.impression) + "." for rank, _, p in ranked)
        if prediction.states.get(Observation.NO_FINDING) in (Certainty.ABSENT, Certainty.UNCERTAIN):
            # The model does not call the study normal, yet states no specific finding: say so
            # rather than write a normal impression it does not support.
            return self.table.impression["not_normal_unspecified"]
        everything = all(prediction.assessed(o) for o in self.table.observations if o is not Observation.SUPPORT_DEVICES)
        return self.table.impression["normal" if everything else "normal_partial"]

    def footer(self, prediction: Prediction) -> str | None:
        missing = [o for o in prediction.not_assessed if o is not Observation.NO_FINDING]
        if not missing:
            return None
        return self.table.footer.format(observations=", ".join(o.value.lower() for o in missing))

    # -- borrowing normal phrasing ---------------------------------------------------------------

    def _normal_candidates(self, context: DraftContext) -> list[tuple[str, frozenset[Observation]]]:
        """Sanitised normal sentences of the retrieved findings, each with the observations the
        labeler reads as absent in it (only sentences reading nothing else)."""
        out: list[tuple[str, frozenset[Observation]]] = []
        seen: set[str] = set()
        for sentence in _sentences(case.findings for case in context.cases):
            key = normalise(sentence)
            if key in seen or not check_sentence(sentence).ok or not is_normal_statement(sentence):
                continue
            seen.add(key)
            labels = {o: c for o, c in self.labeler.text(sentence).items() if o is not Observation.NO_FINDING}
            if labels and all(c is Certainty.ABSENT for c in labels.values()):
                sections = {self.table.observations[o].section for o in labels}
                if len(sections) == 1:
                    out.append((sentence, frozenset(labels)))
        return out


def _findings_only(prediction: Prediction) -> Prediction:
    """The prediction's stated and hedged findings alone (no normal statements, no No Finding)."""
    keep: dict[Observation, Certainty] = {o: s for o, s in prediction.states.items() if o is not Observation.NO_FINDING and s is not Certainty.ABSENT}
    return Prediction(keep, {o: prediction.probabilities[o] for o in keep if o in prediction.probabilities},
                      prediction.present_thresholds, prediction.absent_thresholds)


def _sentences(texts: Iterable[str]) -> Iterable[str]:
    for text in texts:
        yield from split_sentences(text)


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]

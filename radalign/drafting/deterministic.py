"""The deterministic drafter: a report assembled from the retrieved reports' own sentences.

A sentence of a retrieved report is kept only when every observation the labeler finds in it
has the state the concept model predicted (so "no effusion" is kept only for a study predicted
without effusion) and when it says something about an observation not yet covered (no repeats).
Each positive or uncertain concept the kept sentences do not state gets a plain sentence, and
the usual normal statements are added for observations predicted absent. No LLM is involved,
so the result is reproducible; it is the fallback whenever the LLM fails and the CI default.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable

from radalign.drafting.backends import DraftText
from radalign.drafting.concepts import (
    NORMAL_IMPRESSION,
    NORMAL_SENTENCES,
    POSITIVE_SENTENCES,
    UNCERTAIN_SENTENCES,
    Prediction,
)
from radalign.drafting.labels import ReportLabeler, default_labeler
from radalign.drafting.prompt import DraftContext, DraftPrompt
from radalign.drafting.text import is_redacted, mentions_prior, normalise, off_topic_phrases, split_sentences
from schemas.events import Certainty, Observation

NAME = "deterministic"

# A sentence the labeler finds no observation in is kept only when it reads as a normal
# statement ("No acute disease.", "The lungs appear clear."): otherwise it describes something
# outside the 14 concepts (scoliosis, low lung volumes, granulomas) that the model cannot
# confirm for this study, and copying it from another patient would be a hallucination.
_NORMAL_STATEMENT = re.compile(
    r"^\W*(?:no|normal|negative|clear|unremarkable)\b"
    r"|\b(?:is|are|appears?|remains?)\s+(?:\w+\s+){0,2}?(?:normal|clear|unremarkable|intact|within\s+normal\s+limits)\b",
    re.IGNORECASE,
)
_QUALIFIER = re.compile(r"\b(?:but|with|except|although|however|though)\b", re.IGNORECASE)


def is_normal_statement(sentence: str) -> bool:
    return bool(_NORMAL_STATEMENT.search(sentence)) and not _QUALIFIER.search(sentence)


class DeterministicDrafter:
    name = NAME

    def __init__(self, labeler: ReportLabeler | None = None, *, max_case_sentences: int = 8) -> None:
        self._labeler = labeler
        self._max_case_sentences = max_case_sentences

    @property
    def labeler(self) -> ReportLabeler:
        if self._labeler is None:
            self._labeler = default_labeler()
        return self._labeler

    async def generate(self, prompt: DraftPrompt) -> DraftText:
        return self.draft(prompt.context)

    def draft(self, context: DraftContext) -> DraftText:
        started = time.perf_counter()
        prediction = context.prediction
        has_findings = any(prediction.findings(state) for state in (Certainty.PRESENT, Certainty.UNCERTAIN))

        covered: dict[Observation, Certainty] = {}
        findings = self._agreeing_sentences(
            (case.findings for case in context.cases), prediction, covered, allow_normal=not has_findings
        )
        for observation in prediction.findings(Certainty.PRESENT):
            if covered.get(observation) is not Certainty.PRESENT:
                findings.append(POSITIVE_SENTENCES[observation])
                covered[observation] = Certainty.PRESENT
        for observation in prediction.findings(Certainty.UNCERTAIN):
            if observation not in covered:
                findings.append(UNCERTAIN_SENTENCES[observation])
                covered[observation] = Certainty.UNCERTAIN
        for observation, sentence in NORMAL_SENTENCES.items():
            if prediction.states.get(observation) is Certainty.ABSENT and observation not in covered:
                findings.append(sentence)
                covered[observation] = Certainty.ABSENT

        # The impression names the positive and uncertain findings; a study without any says so.
        targets = [o for o in Observation if o is not Observation.NO_FINDING and prediction.states.get(o) in (Certainty.PRESENT, Certainty.UNCERTAIN)]
        impression_covered: dict[Observation, Certainty] = {}
        impression = self._agreeing_sentences(
            (case.impression for case in context.cases), prediction, impression_covered,
            allow_normal=not has_findings, must_mention=set(targets),
        )
        for observation in targets:
            if observation not in impression_covered:
                state = prediction.states[observation]
                impression.append((POSITIVE_SENTENCES if state is Certainty.PRESENT else UNCERTAIN_SENTENCES)[observation])
        if not impression:
            impression = [NORMAL_IMPRESSION]
        if not findings:
            findings = ["The lungs are clear."] if not has_findings else list(impression)
        return DraftText(" ".join(findings), " ".join(impression), NAME, elapsed_s=time.perf_counter() - started)

    def _agreeing_sentences(
        self,
        texts: Iterable[str],
        prediction: Prediction,
        covered: dict[Observation, Certainty],
        *,
        allow_normal: bool,
        must_mention: set[Observation] | None = None,
    ) -> list[str]:
        kept: list[str] = []
        seen: set[str] = set()
        for text in texts:
            for sentence in split_sentences(text):
                if len(kept) >= self._max_case_sentences:
                    return kept
                key = normalise(sentence)
                if key in seen or mentions_prior(sentence) or is_redacted(sentence) or off_topic_phrases(sentence):
                    continue
                labels = dict(self.labeler.text(sentence))
                # "No Finding" is a report-level summary the labeler also gives sentences without
                # any observation: such a sentence may only be a normal statement, and only for
                # a study without findings (and one such sentence is enough).
                only_normal = set(labels) <= {Observation.NO_FINDING}
                labels.pop(Observation.NO_FINDING, None)
                if only_normal:
                    if allow_normal and not must_mention and is_normal_statement(sentence) and Observation.NO_FINDING not in covered:
                        kept.append(sentence)
                        seen.add(key)
                        covered[Observation.NO_FINDING] = Certainty.PRESENT
                    continue
                if not labels or any(prediction.states.get(o) is not c for o, c in labels.items()):
                    continue
                if must_mention is not None and not (set(labels) & must_mention):
                    continue
                if all(o in covered for o in labels):
                    continue
                kept.append(sentence)
                seen.add(key)
                covered.update(labels)
        return kept

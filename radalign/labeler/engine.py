"""A small NegEx-style engine that turns report text into CheXpert observation labels.

Written by hand because no library labels CheXpert observations offline here: CheXbert needs
model-hub weights, and NegBio (the original CheXpert labeler's engine) needs a Bllip/Stanford
parser and its models, neither installable from the registries. The rules live as data in
`radalign.labeler.rules`; this module only compiles them (once, at import) and applies them:

1. split the text into sentences;
2. in each sentence find mentions (phrase tables) and normal phrases ("lungs are clear");
3. find triggers (negation / uncertainty, forward or backward scoped, pseudo-triggers and
   scope terminators), longest match first;
4. each mention takes the certainty of the nearest trigger whose scope reaches it (uncertainty
   wins a tie); with none it is positive. Normal phrases are negative mentions;
5. per observation, several mentions combine with CheXpert's precedence
   positive > uncertain > negative, and No Finding is derived as CheXpert does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Iterable

from schemas.events import Certainty, Observation

from radalign.labeler import rules

__all__ = [
    "CERTAINTY_PRECEDENCE",
    "Mention",
    "aggregate_mentions",
    "find_mentions",
    "label_report",
    "label_sections",
    "split_sentences",
]

#: When several mentions of one observation disagree, the higher rank wins (CheXpert convention:
#: one positive mention makes the observation positive, even next to negated ones).
CERTAINTY_PRECEDENCE: dict[Certainty, int] = {
    Certainty.PRESENT: 2,
    Certainty.UNCERTAIN: 1,
    Certainty.ABSENT: 0,
}

_FLAGS = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class Mention:
    """One mention of an observation: where it is (character span in the text given) and its certainty."""

    observation: Observation
    certainty: Certainty
    sentence_index: int
    span: tuple[int, int]
    phrase: str


class _Effect(Enum):
    NEGATION = "negation"
    UNCERTAINTY = "uncertainty"
    PSEUDO = "pseudo"
    TERMINATOR = "terminator"


class _Direction(Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    BOTH = "both"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class _Trigger:
    start: int
    end: int
    effect: _Effect
    direction: _Direction


_PUNCTUATION = (";", ":", "\\?")


def _bounded(fragment: str) -> str:
    """Wrap a fragment in word-boundary look-arounds (not around punctuation-only fragments)."""
    if fragment.startswith(_PUNCTUATION):
        return f"(?:{fragment})"
    return rf"(?<![\w])(?:{fragment})(?![\w])"


def _alternation(fragments: Iterable[str]) -> re.Pattern[str]:
    # Longer fragments first so an alternation prefers "no evidence of" to "no" at one position.
    # Word fragments share one pair of boundary look-arounds (much faster than one pair each).
    ordered = sorted(fragments, key=len, reverse=True)
    words = [f for f in ordered if not f.startswith(_PUNCTUATION)]
    punctuation = [f for f in ordered if f.startswith(_PUNCTUATION)]
    parts = [rf"(?<![\w])(?:{'|'.join(words)})(?![\w])"] if words else []
    parts += [f"(?:{f})" for f in punctuation]
    return re.compile("|".join(parts), _FLAGS)


_MENTION_PATTERNS: tuple[tuple[Observation, re.Pattern[str]], ...] = tuple(
    (observation, _alternation(phrases)) for observation, phrases in rules.MENTION_PHRASES.items()
)
_NORMAL_PATTERNS: tuple[tuple[re.Pattern[str], tuple[Observation, ...]], ...] = tuple(
    (re.compile(_bounded(phrase), _FLAGS), observations) for phrase, observations in rules.NORMAL_PHRASES
)
#: Trigger tables in tie-break order: at equal length, an earlier entry wins an overlap.
_TRIGGER_PATTERNS: tuple[tuple[re.Pattern[str], _Effect, _Direction], ...] = (
    (_alternation(rules.PSEUDO_TRIGGERS), _Effect.PSEUDO, _Direction.NONE),
    (_alternation(rules.UNCERTAINTY_PRE), _Effect.UNCERTAINTY, _Direction.FORWARD),
    (_alternation(rules.UNCERTAINTY_POST), _Effect.UNCERTAINTY, _Direction.BACKWARD),
    (_alternation(rules.UNCERTAINTY_BOTH), _Effect.UNCERTAINTY, _Direction.BOTH),
    (_alternation(rules.NEGATION_PRE), _Effect.NEGATION, _Direction.FORWARD),
    (_alternation(rules.NEGATION_POST), _Effect.NEGATION, _Direction.BACKWARD),
    (_alternation(rules.SCOPE_TERMINATORS), _Effect.TERMINATOR, _Direction.NONE),
)
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
#: A backward trigger reaches at most this many characters back ("effusion and pneumothorax
#: are not seen" reaches both; a clause further back is another statement).
_BACKWARD_REACH = 60


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) in `text`: a break after . ! ? followed by space, or a newline."""
    spans: list[tuple[int, int]] = []
    start = 0
    for brk in _SENTENCE_BREAK.finditer(text):
        if brk.start() > start:
            spans.append((start, brk.start()))
        start = brk.end()
    if start < len(text) and text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _find_triggers(sentence: str) -> list[_Trigger]:
    candidates: list[tuple[int, int, int, _Effect, _Direction]] = []
    for rank, (pattern, effect, direction) in enumerate(_TRIGGER_PATTERNS):
        for match in pattern.finditer(sentence):
            if match.end() > match.start():
                candidates.append((match.start(), match.end(), rank, effect, direction))
    # One span matched by a forward and a backward table of one effect ("not excluded",
    # "suspected") scopes both ways.
    directions: dict[tuple[int, int, _Effect], set[_Direction]] = {}
    for start, end, _rank, effect, direction in candidates:
        directions.setdefault((start, end, effect), set()).add(direction)
    # Longest first, then by table rank: accept triggers that do not overlap an accepted one.
    candidates.sort(key=lambda c: (-(c[1] - c[0]), c[2], c[0]))
    accepted: list[_Trigger] = []
    for start, end, _rank, effect, direction in candidates:
        if all(end <= t.start or start >= t.end for t in accepted):
            if {_Direction.FORWARD, _Direction.BACKWARD} <= directions[(start, end, effect)]:
                direction = _Direction.BOTH
            accepted.append(_Trigger(start, end, effect, direction))
    accepted.sort(key=lambda t: t.start)
    return accepted


def _blocked(terminators: list[_Trigger], lo: int, hi: int) -> bool:
    return any(lo <= t.start and t.end <= hi for t in terminators)


def _certainty(start: int, end: int, triggers: list[_Trigger], terminators: list[_Trigger]) -> Certainty:
    best: tuple[int, int, Certainty] | None = None  # (distance, tie-break, certainty)
    for trig in triggers:
        distance: int | None = None
        if trig.direction in (_Direction.FORWARD, _Direction.BOTH) and trig.start < end:
            if trig.end <= start and not _blocked(terminators, trig.end, start):
                distance = start - trig.end
            elif trig.start >= start and trig.end <= end:  # inside: "heart is not enlarged"
                distance = 0
        if distance is None and trig.direction in (_Direction.BACKWARD, _Direction.BOTH) and trig.start >= end:
            if trig.start - end <= _BACKWARD_REACH and not _blocked(terminators, end, trig.start):
                distance = trig.start - end
        if distance is None:
            continue
        certainty = Certainty.UNCERTAIN if trig.effect is _Effect.UNCERTAINTY else Certainty.ABSENT
        key = (distance, 0 if certainty is Certainty.UNCERTAIN else 1, certainty)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best is not None else Certainty.PRESENT


def _sentence_mentions(text: str, index: int, lo: int, hi: int) -> list[Mention]:
    sentence = text[lo:hi]
    found = _find_triggers(sentence)
    triggers = [t for t in found if t.effect in (_Effect.NEGATION, _Effect.UNCERTAINTY)]
    terminators = [t for t in found if t.effect is _Effect.TERMINATOR]
    mentions: list[Mention] = []
    normal_spans: dict[Observation, list[tuple[int, int]]] = {}
    for pattern, observations in _NORMAL_PATTERNS:
        for match in pattern.finditer(sentence):
            for observation in observations:
                normal_spans.setdefault(observation, []).append(match.span())
                mentions.append(
                    Mention(observation, Certainty.ABSENT, index, (lo + match.start(), lo + match.end()), match.group())
                )
    for observation, pattern in _MENTION_PATTERNS:
        for match in pattern.finditer(sentence):
            start, end = match.span()
            # Inside a normal phrase ("heart size is not enlarged") the phrase has already spoken.
            if any(s <= start and end <= e for s, e in normal_spans.get(observation, ())):
                continue
            certainty = _certainty(start, end, triggers, terminators)
            mentions.append(Mention(observation, certainty, index, (lo + start, lo + end), match.group()))
    return mentions


def find_mentions(text: str) -> list[Mention]:
    """Every observation mention in `text`, in text order, with its certainty."""
    mentions: list[Mention] = []
    for index, (lo, hi) in enumerate(split_sentences(text)):
        mentions.extend(_sentence_mentions(text, index, lo, hi))
    mentions.sort(key=lambda m: (m.span[0], m.span[1], list(Observation).index(m.observation)))
    return mentions


def aggregate_mentions(mentions: Iterable[Mention]) -> dict[Observation, Certainty]:
    """Combine mentions per observation (positive > uncertain > negative) and derive No Finding.

    No Finding follows CheXpert: positive when no observation other than Support Devices is
    positive or uncertain; otherwise it is left out (CheXpert leaves it blank).
    """
    labels: dict[Observation, Certainty] = {}
    for mention in mentions:
        if mention.observation is Observation.NO_FINDING:
            continue
        current = labels.get(mention.observation)
        if current is None or CERTAINTY_PRECEDENCE[mention.certainty] > CERTAINTY_PRECEDENCE[current]:
            labels[mention.observation] = mention.certainty
    pathology_found = any(
        certainty is not Certainty.ABSENT
        for observation, certainty in labels.items()
        if observation is not Observation.SUPPORT_DEVICES
    )
    if not pathology_found:
        labels[Observation.NO_FINDING] = Certainty.PRESENT
    return {observation: labels[observation] for observation in Observation if observation in labels}


def label_report(text: str) -> dict[Observation, Certainty]:
    """CheXpert labels of a report text: only the observations it mentions, plus No Finding."""
    return aggregate_mentions(find_mentions(text))


def label_sections(findings: str, impression: str) -> dict[Observation, Certainty]:
    """Labels of a report given as FINDINGS and IMPRESSION sections (both read, one precedence)."""
    return label_report("\n".join(part for part in (findings, impression) if part))

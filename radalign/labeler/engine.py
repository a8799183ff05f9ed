"""A small NegEx-style engine that turns report text into CheXpert observation labels.

Written by hand because no library labels CheXpert observations offline here: CheXbert needs
model-hub weights, and NegBio (the original CheXpert labeler's engine) needs a Bllip/Stanford
parser and its models, neither installable from the registries. The rules live as data in
`radalign.labeler.rules`; this module only compiles them (once, at import) and applies them:

0. leave out the context sections (INDICATION, HISTORY, COMPARISON, TECHNIQUE, EXAM ...: why and
   how the study was done, not what it shows); FINDINGS, IMPRESSION, other headings and unheaded
   text are read;
1. split the text into sentences (a line break inside a sentence does not end it: reports are
   often wrapped at a fixed width, and "There is no\npneumothorax" is one negated statement);
2. in each sentence find mentions (phrase tables) and normal phrases ("lungs are clear");
3. find triggers (negation / uncertainty, forward or backward scoped, pseudo-triggers and
   scope terminators), longest match first;
4. each mention takes the certainty of the nearest trigger whose scope reaches it (uncertainty
   wins a tie); with none it is positive, unless it is one of two findings joined by "or" /
   "and/or" (CheXpert: uncertain). Normal phrases are negative mentions. A "cannot be
   assessed" trigger makes the mention *not assessed* (no claim). Anatomy checks drop mentions
   placed outside the organ the observation is about (a mediastinal mass is no Lung Lesion, a
   cholecystectomy clip no chest support device);
5. per observation, several mentions combine with CheXpert's precedence
   positive > uncertain > negative (not assessed outranks only negative: absence was not
   established), CheXpert's hierarchy lifts Lung Opacity to its children's state, the uncertainty
   policy applies (keep / strict: uncertain -> absent / lenient: uncertain -> present), and No
   Finding is derived as CheXpert does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from radalign.labeler import rules
from schemas.events import Certainty, Observation

__all__ = [
    "CERTAINTY_PRECEDENCE",
    "HIERARCHY",
    "Mention",
    "ReportLabels",
    "UncertaintyPolicy",
    "aggregate_mentions",
    "aggregate_report",
    "assess_report",
    "find_mentions",
    "label_report",
    "label_sections",
    "report_sentences",
    "split_sentences",
]

#: When several mentions of one observation disagree, the higher rank wins (CheXpert convention:
#: one positive mention makes the observation positive, even next to negated ones).
CERTAINTY_PRECEDENCE: dict[Certainty, int] = {
    Certainty.PRESENT: 2,
    Certainty.UNCERTAIN: 1,
    Certainty.ABSENT: 0,
}

#: keep: uncertain stays uncertain; strict: uncertain counts as absent (CheXpert's U-Zeros);
#: lenient: uncertain counts as present (U-Ones).
UncertaintyPolicy = Literal["keep", "strict", "lenient"]
_POLICY_MAP: dict[str, Certainty] = {"strict": Certainty.ABSENT, "lenient": Certainty.PRESENT}

#: CheXpert's hierarchy (Irvin et al. 2019, fig. 2): a positive or uncertain child makes its parent
#: at least as certain. Only Lung Opacity is derived: a large heart is not a wide mediastinum in a
#: report's words, so Enlarged Cardiomediastinum is not lifted from Cardiomegaly.
HIERARCHY: dict[Observation, tuple[Observation, ...]] = {
    Observation.LUNG_OPACITY: (
        Observation.CONSOLIDATION, Observation.PNEUMONIA, Observation.EDEMA, Observation.ATELECTASIS, Observation.LUNG_LESION,
    ),
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
    #: True for "X cannot be assessed": no claim either way (`certainty` is then ABSENT, ignored).
    not_assessed: bool = False


@dataclass(frozen=True, slots=True)
class ReportLabels:
    """A report's labels (mentioned observations + No Finding) and what it says it could not assess."""

    labels: dict[Observation, Certainty]
    not_assessed: frozenset[Observation]


class _Effect(Enum):
    NEGATION = "negation"
    UNCERTAINTY = "uncertainty"
    PSEUDO = "pseudo"
    TERMINATOR = "terminator"
    NOT_ASSESSED = "not_assessed"


class _Direction(Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    BOTH = "both"
    #: both ways, but not past a comma: "opacity, atelectasis versus pneumonia" hedges the two
    #: alternatives, not the opacity named before them
    CLAUSE = "clause"
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
    (_alternation(rules.NOT_ASSESSED_PRE), _Effect.NOT_ASSESSED, _Direction.FORWARD),
    (_alternation(rules.NOT_ASSESSED_POST), _Effect.NOT_ASSESSED, _Direction.BACKWARD),
    (_alternation(rules.UNCERTAINTY_PRE), _Effect.UNCERTAINTY, _Direction.FORWARD),
    (_alternation(rules.UNCERTAINTY_POST), _Effect.UNCERTAINTY, _Direction.BACKWARD),
    (_alternation(rules.UNCERTAINTY_BOTH), _Effect.UNCERTAINTY, _Direction.CLAUSE),
    (_alternation(rules.NEGATION_PRE), _Effect.NEGATION, _Direction.FORWARD),
    (_alternation(rules.NEGATION_POST), _Effect.NEGATION, _Direction.BACKWARD),
    (_alternation(rules.SCOPE_TERMINATORS), _Effect.TERMINATOR, _Direction.NONE),
)
#: A period after these abbreviations does not end the sentence: "atelectasis vs. pneumonia" is
#: one hedged statement (split there, "pneumonia" read as a plain finding of its own sentence).
_ABBREVIATIONS = ("vs", "e.g", "i.e", "approx", "cf", "viz", "incl", "esp")
_AFTER_ABBREVIATION = "".join(rf"(?<!\b{re.escape(a)}\.)" for a in _ABBREVIATIONS)
_PUNCTUATION_BREAK = re.compile(rf"(?<=[.!?]){_AFTER_ABBREVIATION}\s+", _FLAGS)
_ENDS_WITH_ABBREVIATION = re.compile(rf"\b(?:{'|'.join(re.escape(a) for a in _ABBREVIATIONS)})\.$", _FLAGS)
_NEWLINES = re.compile(r"[ \t]*(?:\r?\n[ \t]*)+")
#: A line that starts a new statement: a section heading ("IMPRESSION:") or a list item ("1.", "-").
_NEW_STATEMENT = re.compile(r"(?:[A-Z][A-Za-z /&-]{1,40}:|\d{1,2}[.)]\s|[-*\u2022]\s)")
#: Words a sentence does not end on: a line ending with one continues on the next line.
_CONTINUATION_WORDS = frozenset(
    "a an the no not nor neither without of with and or but to in on at by for from into within than as is are was "
    "were be been being has have had there that which this these any evidence suggest suggests suggestive possible "
    "possibly probable probably likely may might can could cannot mild mildly moderate moderately severe small large "
    "minimal trace tiny left right bilateral lower upper middle mid new old free clear negative concern concerning "
    "compatible consistent versus vs "
    # modifiers that need their noun: "NO PLEURAL / EFFUSION" in short ALL-CAPS lines
    "pleural pulmonary cardiac cardiomediastinal mediastinal focal acute airspace interstitial subsegmental lobar "
    "patchy streaky significant definite".split()
)
#: Words a sentence does not start with: a line starting with one goes on from the line before.
_CONTINUING_WORDS = frozenset("or nor of than versus vs".split())
_LAST_WORD = re.compile(r"([A-Za-z']+)\W*$")
_FIRST_WORD = re.compile(r"\W*([A-Za-z']+)")


_ACRONYM_START = re.compile(r"[A-Z]{2,}\b")
_PROSE_PUNCTUATION = re.compile(r"[.!?](?:\s|$)")


#: Report systems wrap at 60-80 characters (the IU check: 48, whose lines reach 30 and more); lines all
#: shorter than this are a list of statements, one a line, not wrapped prose.
_MIN_WRAP_WIDTH = 30


def _looks_wrapped(text: str, start: int, end: int, width: int) -> bool:
    """Whether the line before the break was wrapped: the next line's first word would not have
    fitted on it (a greedy wrap breaks only then), at a width a report system wraps at."""
    line = text[text.rfind("\n", 0, start) + 1 : start].strip()
    following = text[end:].split(maxsplit=1)
    return width >= _MIN_WRAP_WIDTH and bool(following) and len(line) + 1 + len(following[0]) > width


def _line_break_ends_sentence(text: str, start: int, end: int, *, all_caps: bool, prose: bool, width: int) -> bool:
    """Whether the line break text[start:end] ends a sentence (else it is a wrapped line).

    Without punctuation before it, a line break joins the lines when the next line goes on in
    lower case or with an acronym ("XXXX", "PICC": mid-sentence in mixed-case text), when the line
    ends on a word no sentence ends on ("no", "of", "pleural") or the next starts with one no
    sentence starts with ("or"), or, in ALL-CAPS prose (the case says nothing there), when the
    line looks wrapped at a width. It ends the statement before a blank line, a heading or a list
    item, and a period ends it unless it closes an abbreviation ("vs.").
    """
    before, after = text[:start].rstrip(), text[end:]
    if not before or not after.strip() or text.count("\n", start, end) >= 2:  # a blank line
        return True
    if before[-1] in ".!?;:":
        return not _ENDS_WITH_ABBREVIATION.search(before)
    if _NEW_STATEMENT.match(after):
        return before[-1] not in ",-/("
    if before[-1] in ",-/(" or after[0].islower() or after[0] in "(,":
        return False
    last, first = _LAST_WORD.search(before), _FIRST_WORD.match(after)
    if (last and last.group(1).lower() in _CONTINUATION_WORDS) or (first and first.group(1).lower() in _CONTINUING_WORDS):
        return False
    if all_caps:
        # ALL-CAPS dictation often puts one finding on each line ("NO PNEUMOTHORAX" /
        # "BIBASILAR ATELECTASIS"): only a line that was wrapped goes on, else the first line's
        # negation or hedge would reach every finding below it.
        return not (prose and _looks_wrapped(text, start, end, width))
    return not _ACRONYM_START.match(after)


def _break_spans(text: str) -> list[tuple[int, int]]:
    breaks = [m.span() for m in _PUNCTUATION_BREAK.finditer(text)]
    all_caps = not any(ch.islower() for ch in text)
    prose = bool(_PROSE_PUNCTUATION.search(text))
    width = max((len(line.strip()) for line in text.splitlines()), default=0)
    breaks += [
        m.span() for m in _NEWLINES.finditer(text) if _line_break_ends_sentence(text, *m.span(), all_caps=all_caps, prose=prose, width=width)
    ]
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(breaks):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


#: A backward trigger reaches at most this many characters back ("effusion and pneumothorax
#: are not seen" reaches both; a clause further back is another statement).
_BACKWARD_REACH = 60


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans (start, end) in `text`: a break after . ! ? followed by space, a blank line,
    or a line break that ends a statement. A line break inside a sentence (the line ends on a
    word like "no", "of", "and", or the next line goes on in lower case) joins the two lines."""
    spans: list[tuple[int, int]] = []
    start = 0
    for lo, hi in _break_spans(text):
        if lo > start and text[start:lo].strip():
            spans.append((start, lo))
        start = hi
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
            scopes = directions[(start, end, effect)]
            if _Direction.CLAUSE in scopes:  # a trailing "likely" is also a forward "likely"
                direction = _Direction.CLAUSE
            elif {_Direction.FORWARD, _Direction.BACKWARD} <= scopes:
                direction = _Direction.BOTH
            accepted.append(_Trigger(start, end, effect, direction))
    accepted.sort(key=lambda t: t.start)
    return accepted


def _blocked(terminators: list[_Trigger], lo: int, hi: int) -> bool:
    return any(lo <= t.start and t.end <= hi for t in terminators)


#: At equal distance: not assessed, then uncertainty, then negation.
_TIE_BREAK = {_Effect.NOT_ASSESSED: 0, _Effect.UNCERTAINTY: 1, _Effect.NEGATION: 2}
_CERTAINTY_OF = {_Effect.UNCERTAINTY: Certainty.UNCERTAIN, _Effect.NEGATION: Certainty.ABSENT, _Effect.NOT_ASSESSED: Certainty.ABSENT}


_FORWARD = (_Direction.FORWARD, _Direction.BOTH, _Direction.CLAUSE)
_BACKWARD = (_Direction.BACKWARD, _Direction.BOTH, _Direction.CLAUSE)


def _scoping_effect(
    start: int, end: int, triggers: list[_Trigger], terminators: list[_Trigger], commas: list[int]
) -> _Effect | None:
    """The effect of the nearest trigger whose scope reaches the span; None: a positive mention."""
    best: tuple[int, int, _Effect] | None = None  # (distance, tie-break, effect)
    for trig in triggers:
        distance: int | None = None
        in_clause = trig.direction is _Direction.CLAUSE
        if trig.direction in _FORWARD and trig.start < end:
            if trig.end <= start and not _blocked(terminators, trig.end, start):
                if not (in_clause and any(trig.end <= c < start for c in commas)):
                    distance = start - trig.end
            elif trig.start >= start and trig.end <= end:  # inside: "heart is not enlarged"
                distance = 0
        if distance is None and trig.direction in _BACKWARD and trig.start >= end:
            if trig.start - end <= _BACKWARD_REACH and not _blocked(terminators, end, trig.start):
                if not (in_clause and any(end <= c < trig.start for c in commas)):
                    distance = trig.start - end
        if distance is None:
            continue
        key = (distance, _TIE_BREAK[trig.effect], trig.effect)
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best is not None else None


def _sentence_mentions(text: str, index: int, lo: int, hi: int) -> list[Mention]:
    sentence = text[lo:hi]
    found = _find_triggers(sentence)
    triggers = [t for t in found if t.effect in (_Effect.NEGATION, _Effect.UNCERTAINTY, _Effect.NOT_ASSESSED)]
    terminators = [t for t in found if t.effect is _Effect.TERMINATOR]
    commas = [m.start() for m in _COMMA.finditer(sentence)] if "," in sentence else []
    mentions: list[Mention] = []
    normal_spans: dict[Observation, list[tuple[int, int]]] = {}
    for pattern, observations in _NORMAL_PATTERNS:
        for match in pattern.finditer(sentence):
            for observation in observations:
                normal_spans.setdefault(observation, []).append(match.span())
                mentions.append(
                    Mention(observation, Certainty.ABSENT, index, (lo + match.start(), lo + match.end()), match.group())
                )
    found_mentions = [
        (observation, match)
        for observation, pattern in _MENTION_PATTERNS
        for match in pattern.finditer(sentence)
        # Inside a normal phrase ("heart size is not enlarged") the phrase has already spoken.
        if not any(s <= match.start() and match.end() <= e for s, e in normal_spans.get(observation, ()))
        and not _outside_organ(observation, sentence, match.start(), match.end(), match.group(), terminators)
    ]
    # "no change in the pneumothorax or effusion": both are still there, not two candidates
    pseudo = [t for t in found if t.effect is _Effect.PSEUDO]
    alternatives = _alternatives(sentence, found_mentions, pseudo, terminators) if _OR.search(sentence) else set()
    for observation, match in found_mentions:
        start, end = match.span()
        effect = _scoping_effect(start, end, triggers, terminators, commas)
        if effect is None and (start, end) in alternatives:
            effect = _Effect.UNCERTAINTY
        certainty = Certainty.PRESENT if effect is None else _CERTAINTY_OF[effect]
        mentions.append(
            Mention(observation, certainty, index, (lo + start, lo + end), match.group(), effect is _Effect.NOT_ASSESSED)
        )
    return mentions


_ALTERNATIVE = re.compile(rules.ALTERNATIVE, _FLAGS)
_OR = re.compile(r"(?<![\w])or(?![\w])", _FLAGS)
_COMMA = re.compile(",")


def _alternatives(
    sentence: str, found: list[tuple[Observation, re.Match[str]]], pseudo: list[_Trigger], terminators: list[_Trigger]
) -> set[tuple[int, int]]:
    """Spans of mentions joined by "or" / "and/or" to a mention of another observation, unless a
    pseudo-trigger ("no change in", "has not cleared") governs the pair."""
    spans: set[tuple[int, int]] = set()
    for first, a in found:
        for second, b in found:
            if first is second or a.end() > b.start() or not _ALTERNATIVE.fullmatch(sentence, a.end(), b.start()):
                continue
            if not any(t.end <= a.start() and not _blocked(terminators, t.end, a.start()) for t in pseudo):
                spans |= {a.span(), b.span()}
    return spans


#: Anatomy checks: the site is named in the mention's own noun phrase, before it ("anterior
#: mediastinal mass", "right upper quadrant surgical clips") or after it through a locative
#: ("mass in the mediastinum", "clips are present in the abdomen", "tubing overlies the left upper quadrant").
_LOCATIVE = (
    r"(?:\s+(?:is|are|was|were|seen|noted|present|again|also|partially|visualized|projecting|projects|projected))*"
    r"\s+(?:in|within|of|at|over|overlying|overlies|into|involving|from)\s+(?:the\s+)?"
)


def _site_patterns(sites: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    before = re.compile(rf"(?<![\w])(?:{sites})(?:\s+[\w/-]+){{0,2}}\s+$", _FLAGS)
    after = re.compile(rf"{_LOCATIVE}(?:[\w-]+\s+){{0,3}}?(?:{sites})(?![\w])", _FLAGS)
    return before, after


_SITE_CHECKS: dict[Observation, tuple[re.Pattern[str], re.Pattern[str]]] = {
    Observation.LUNG_LESION: _site_patterns(rules.NON_LUNG_SITES),
    Observation.SUPPORT_DEVICES: _site_patterns(rules.ABDOMINAL_SITES),
}
_SITE_IN_PHRASE: dict[Observation, re.Pattern[str]] = {
    Observation.SUPPORT_DEVICES: re.compile(rf"(?<![\w])(?:{rules.ABDOMINAL_SITES})(?![\w])", _FLAGS),
}
_SITE_EXEMPT: dict[Observation, re.Pattern[str]] = {
    Observation.SUPPORT_DEVICES: re.compile(rf"(?<![\w])(?:{rules.CHEST_FILM_TUBES})(?![\w])", _FLAGS),
}


def _outside_organ(observation: Observation, sentence: str, start: int, end: int, phrase: str, terminators: list[_Trigger]) -> bool:
    """A mention whose own phrase places it outside the observation's organ: not this observation."""
    checks = _SITE_CHECKS.get(observation)
    if checks is None:
        return False
    exempt = _SITE_EXEMPT.get(observation)
    if exempt is not None and exempt.search(sentence, max(0, start - 20), min(len(sentence), end + 5)):
        return False
    in_phrase = _SITE_IN_PHRASE.get(observation)
    if in_phrase is not None and in_phrase.search(phrase):
        return True
    before, after = checks
    return bool(before.search(sentence[max(0, start - 60) : start]) or after.match(sentence, end))


# ---- report sections -----------------------------------------------------------------------------
_CONTEXT_NAME = re.compile(rf"(?:{'|'.join(rules.CONTEXT_SECTIONS)})", _FLAGS)
_KNOWN_NAMES = "|".join((*rules.CONTEXT_SECTIONS, *rules.FINDING_SECTIONS))
#: "Name:" at the start of a line, whatever the name: a structured report's "LUNGS:" heads findings
#: and so ends a context section as FINDINGS: does.
_LINE_HEADING = re.compile(r"^[ \t]*(?P<name>[A-Za-z][A-Za-z /&()-]{0,40}?)[ \t]*:", re.MULTILINE)
#: A known heading inside a line ("... cough. FINDINGS: ..."), accepted as `_inline_heading` says.
_INLINE_HEADING = re.compile(rf"(?<![\w/-])(?P<name>{_KNOWN_NAMES})[ \t]*:", _FLAGS)
#: A known heading alone on its line, without a colon ("INDICATION" then the text below).
_BARE_HEADING = re.compile(rf"^[ \t]*(?P<name>{_KNOWN_NAMES})[ \t]*$", _FLAGS | re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")


@dataclass(frozen=True, slots=True)
class _Heading:
    start: int
    body: int  # where the section's text begins (after the heading)
    context: bool  # INDICATION, HISTORY, COMPARISON ...: its text claims nothing


def _inline_heading(text: str, match: re.Match[str]) -> bool:
    """A known name inside a line heads a section after a sentence's end, in capitals, or (findings
    and impression only) capitalised: "Comparison: 01/02/2020 Findings: ...". A capitalised
    context name there is prose ("Chest Comparison: there is a mass"), not a heading."""
    before = text[: match.start()].rstrip(" \t")
    name = match.group("name")
    if name.isupper() or not before or before[-1] in ".!?;\n":
        return True
    return name[0].isupper() and not _CONTEXT_NAME.fullmatch(" ".join(name.split()))


def _headings(text: str) -> list[_Heading]:
    found: dict[int, _Heading] = {}
    matches = list(_BARE_HEADING.finditer(text)) if "\n" in text else []
    if ":" in text:  # most report texts (the IU findings and impressions) have no heading at all
        matches += [*_LINE_HEADING.finditer(text), *(m for m in _INLINE_HEADING.finditer(text) if _inline_heading(text, m))]
    for match in matches:
        start = match.start("name")
        name = " ".join(match.group("name").split())
        if start not in found:
            found[start] = _Heading(start, match.end(), bool(_CONTEXT_NAME.fullmatch(name)))
    return sorted(found.values(), key=lambda h: h.start)


def _context_spans(text: str) -> list[tuple[int, int]]:
    """The spans of context sections (heading and text): they run to the next heading, or to a
    blank line after their first text ("HISTORY: cough" + blank line + unheaded findings)."""
    headings = _headings(text)
    spans: list[tuple[int, int]] = []
    for i, heading in enumerate(headings):
        if not heading.context:
            continue
        end = headings[i + 1].start if i + 1 < len(headings) else len(text)
        body = text[heading.body : end]
        content = heading.body + len(body) - len(body.lstrip())
        blank = _BLANK_LINE.search(text, content, end)
        spans.append((heading.start, blank.start() if blank else end))
    return spans


def _without(spans: list[tuple[int, int]], excluded: list[tuple[int, int]], text: str) -> list[tuple[int, int]]:
    """`spans` less the `excluded` ranges; pieces left with only blanks or punctuation are dropped."""
    if not excluded:
        return spans
    kept: list[tuple[int, int]] = []
    for lo, hi in spans:
        pieces = [(lo, hi)]
        for x_lo, x_hi in excluded:
            pieces = [p for a, b in pieces for p in ((a, min(b, x_lo)), (max(a, x_hi), b)) if p[0] < p[1]]
        kept += [(a, b) for a, b in pieces if any(ch.isalnum() for ch in text[a:b])]
    return kept


def report_sentences(text: str) -> list[tuple[int, int]]:
    """The sentence spans of `text` that can carry labels: `split_sentences` less the context
    sections (INDICATION, HISTORY, COMPARISON, TECHNIQUE, EXAM ...). Text without headings is
    read whole; FINDINGS, IMPRESSION and any other heading count."""
    return _without(split_sentences(text), _context_spans(text), text)


def find_mentions(text: str) -> list[Mention]:
    """Every observation mention in `text` (outside context sections), in text order, with its certainty."""
    mentions: list[Mention] = []
    for index, (lo, hi) in enumerate(report_sentences(text)):
        mentions.extend(_sentence_mentions(text, index, lo, hi))
    mentions.sort(key=lambda m: (m.span[0], m.span[1], list(Observation).index(m.observation)))
    return mentions


def aggregate_mentions(
    mentions: Iterable[Mention], *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = False
) -> dict[Observation, Certainty]:
    """Combine mentions per observation (positive > uncertain > negative) and derive No Finding.

    Observations said to be not assessed are left out unless another mention is positive or
    uncertain (see `aggregate_report` for the set). No Finding follows CheXpert: positive when no
    observation other than Support Devices is positive or uncertain; otherwise it is left out.
    """
    return aggregate_report(mentions, uncertainty=uncertainty, hierarchy=hierarchy).labels


def aggregate_report(
    mentions: Iterable[Mention], *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = False
) -> ReportLabels:
    """`aggregate_mentions` plus the observations the report says it could not assess."""
    if uncertainty not in ("keep", "strict", "lenient"):
        raise ValueError(f"uncertainty policy must be keep, strict or lenient, not {uncertainty!r}")
    labels: dict[Observation, Certainty] = {}
    unassessed: set[Observation] = set()
    for mention in mentions:
        if mention.observation is Observation.NO_FINDING:
            continue
        if mention.not_assessed:
            unassessed.add(mention.observation)
            continue
        current = labels.get(mention.observation)
        if current is None or CERTAINTY_PRECEDENCE[mention.certainty] > CERTAINTY_PRECEDENCE[current]:
            labels[mention.observation] = mention.certainty
    # not assessed outranks a negative mention only: absence was not established
    for observation in unassessed:
        if labels.get(observation) is Certainty.ABSENT:
            del labels[observation]
    not_assessed = frozenset(o for o in unassessed if o not in labels)
    if hierarchy:
        for parent, children in HIERARCHY.items():
            for child in children:
                state = labels.get(child)
                if state in (Certainty.PRESENT, Certainty.UNCERTAIN) and (
                    parent not in labels or CERTAINTY_PRECEDENCE[state] > CERTAINTY_PRECEDENCE[labels[parent]]
                ):
                    labels[parent] = state
            if parent in labels:
                not_assessed -= {parent}
    if uncertainty != "keep":
        labels = {o: (_POLICY_MAP[uncertainty] if c is Certainty.UNCERTAIN else c) for o, c in labels.items()}
    pathology_found = any(
        certainty is not Certainty.ABSENT
        for observation, certainty in labels.items()
        if observation is not Observation.SUPPORT_DEVICES
    )
    if not pathology_found and not not_assessed:
        labels[Observation.NO_FINDING] = Certainty.PRESENT
    return ReportLabels({o: labels[o] for o in Observation if o in labels}, frozenset(not_assessed))


def assess_report(text: str, *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = False) -> ReportLabels:
    """Labels of a report text and the observations it says could not be assessed."""
    return aggregate_report(find_mentions(text), uncertainty=uncertainty, hierarchy=hierarchy)


def label_report(text: str, *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = False) -> dict[Observation, Certainty]:
    """CheXpert labels of a report text: only the observations it mentions, plus No Finding.

    `uncertainty`: keep (default) / strict (uncertain -> absent) / lenient (uncertain -> present).
    `hierarchy`: lift Lung Opacity to its children's state (CheXpert's hierarchy). Off by default
    so that a checker comparing labels mention by mention (the drafting guard) sees what the text
    says; the case store and `radalign label FILE` turn it on (CheXpert-style label sets).
    """
    return aggregate_mentions(find_mentions(text), uncertainty=uncertainty, hierarchy=hierarchy)


def label_sections(
    findings: str, impression: str, *, uncertainty: UncertaintyPolicy = "keep", hierarchy: bool = False
) -> dict[Observation, Certainty]:
    """Labels of a report given as FINDINGS and IMPRESSION sections (both read, one precedence).
    The sections are separated by a blank line, so a findings section without a final period
    does not run into the impression."""
    text = "\n\n".join(part for part in (findings, impression) if part)
    return label_report(text, uncertainty=uncertainty, hierarchy=hierarchy)

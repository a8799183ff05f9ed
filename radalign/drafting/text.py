"""Report text helpers: sentence splitting, removal of comparisons to priors, section parsing.

Hand-written (a few regular expressions) because report prose is short and formulaic; a full
NLP sentence splitter (spaCy, nltk) would add a model download for no gain here.
"""

from __future__ import annotations

import re

# Abbreviations that end with a period inside a sentence in radiology prose.
_ABBREVIATIONS = ("approx.", "e.g.", "i.e.", "vs.", "dr.", "cm.", "mm.", "no.")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(])")
_NUMBERED_ITEM = re.compile(r"^\s*\d+\s*[.)]\s*")

# A sentence that compares with an earlier study: the draft has no prior to compare with, so
# these would be invented history.
_PRIOR_COMPARISON = re.compile(
    r"\b(compar(ed|ison|e)|prior|previous(ly)?|unchanged|interval|stable|again|"
    r"redemonstrat\w*|no (significant )?change|since|persist(ent|s|ing)?|improv(ed|ing|ement)|"
    r"worsen(ed|ing)?|increas(ed|ing) (in|from)|decreas(ed|ing) (in|from)|resolv(ed|ing)|new since|"
    r"status post|s/p)\b",
    re.IGNORECASE,
)
# IU reports anonymise words as "XXXX": a sentence that lost a word this way reads wrong.
_REDACTED = re.compile(r"X{2,}")

# "FINDINGS:", "**Findings:**", "## Impression:" (models add markdown) at the start of a line.
_SECTION = re.compile(r"(?im)^\s*[*#]*\s*(findings|impression)\s*[*#]*\s*:\s*[*]*\s*")


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, stripped, each ending with its punctuation; numbering removed."""
    text = " ".join(text.split())
    if not text:
        return []
    protected = text
    for abbreviation in _ABBREVIATIONS:
        protected = re.sub(re.escape(abbreviation), abbreviation.replace(".", "\x00"), protected, flags=re.IGNORECASE)
    sentences = []
    for piece in _SENTENCE_END.split(protected):
        piece = _NUMBERED_ITEM.sub("", piece.replace("\x00", ".")).strip()
        if len(piece) > 1:
            sentences.append(piece if piece[-1] in ".!?" else piece + ".")
    return sentences


def mentions_prior(sentence: str) -> bool:
    return bool(_PRIOR_COMPARISON.search(sentence))


def is_redacted(sentence: str) -> bool:
    return bool(_REDACTED.search(sentence))


def strip_priors(text: str) -> str:
    """`text` without its sentences that compare with a prior study (or lost words to redaction)."""
    return " ".join(s for s in split_sentences(text) if not mentions_prior(s) and not is_redacted(s))


def normalise(sentence: str) -> str:
    """Key for de-duplicating sentences: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]+", " ", sentence.lower()).strip()


class MalformedReport(ValueError):
    """Text that does not hold both a FINDINGS and an IMPRESSION section."""


def parse_sections(text: str, *, starts_in_findings: bool = False) -> tuple[str, str]:
    """(findings, impression) from `FINDINGS: ... IMPRESSION: ...` text.

    `starts_in_findings`: the text is a continuation of a prompt that ended with "FINDINGS:"
    (the base-model form), so it opens with the findings themselves.
    Raises MalformedReport when a section is missing or empty.
    """
    sections: dict[str, str] = {}
    matches = list(_SECTION.finditer(text))
    if starts_in_findings:
        first = matches[0].start() if matches else len(text)
        sections["findings"] = text[:first]
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        name = match.group(1).lower()
        # The first occurrence wins: a model that repeats the sections has started a new report.
        sections.setdefault(name, text[match.end() : end])
    findings = " ".join(sections.get("findings", "").split())
    impression = " ".join(sections.get("impression", "").split())
    if not findings or not impression:
        missing = [name for name, value in (("FINDINGS", findings), ("IMPRESSION", impression)) if not value]
        raise MalformedReport(f"missing or empty section(s): {', '.join(missing)}")
    return findings, impression


#: Text that has no place in a chest radiograph report: other body parts (a small base model
#: continues from whatever the examples held) and talk about the prompt itself. The labeler checks
#: only the 14 observations, so this is checked separately.
_OFF_TOPIC = re.compile(
    r"\b(knees?|hips?|ankles?|feet|foot|wrists?|elbows?|pelvis|sacrum|sacroiliac|femurs?|femoral|tibias?|fibulas?|"
    r"patellae?|skull|lumbar spine|brain|bowel|colon|kidneys?|liver|gallbladder|bladder|uterus|appendix|"
    r"(?:previous|this|the) draft|instructions?|as an ai)\b",
    re.IGNORECASE,
)


def off_topic_phrases(text: str) -> tuple[str, ...]:
    return tuple(sorted({m.group(0).lower() for m in _OFF_TOPIC.finditer(text)}))

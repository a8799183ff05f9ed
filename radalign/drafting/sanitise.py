"""What may never travel from one patient's report into another's draft.

A retrieved case's sentence is about *that* patient: its side and location ("right lower lobe"),
sizes and measurements, comparisons and time ("again", "unchanged", "new", "clearing"), device
positions ("tip in the SVC") and history ("status post CABG") say nothing about this study. The
same vocabulary is what the guard refuses in an LLM's draft when nothing in the study supports it.

Hand-written word lists (regular expressions): report prose is formulaic, and no library ships a
radiology-specific list of these words.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from radalign.drafting.text import is_redacted, off_topic_phrases, split_sentences

_W = r"(?<![\w-])(?:{})(?![\w-])"


def _words(*alternatives: str) -> re.Pattern[str]:
    return re.compile(_W.format("|".join(alternatives)), re.IGNORECASE)


#: reason -> pattern. Reasons are the guard's `GuardReason` values.
PATTERNS: dict[str, re.Pattern[str]] = {
    "laterality": _words(
        r"right", r"left", r"bilateral(?:ly)?", r"both", r"unilateral(?:ly)?", r"bibasilar", r"bibasal", r"bi-?apical",
        r"contralateral", r"ipsilateral", r"dextro\w*", r"levo\w*", r"rt\.?", r"lt\.?",
    ),
    "location": _words(
        r"(?:upper|middle|lower|mid)(?!\s+limits?)(?:\s+(?:lobes?|lung|zones?|fields?|thorax|chest))?", r"lobes?", r"lobar", r"lingula(?:r)?",
        r"bases?", r"basilar", r"basal", r"basally", r"apex", r"apices", r"apical(?:ly)?", r"hil(?:ar|um|a)", r"perihilar",
        r"infrahilar", r"suprahilar", r"retrocardiac", r"paratracheal", r"subpleural", r"peripheral(?:ly)?", r"central(?:ly)?",
        r"anterior(?:ly)?", r"posterior(?:ly)?", r"lateral(?:ly)?(?!\s+(?:views?|radiographs?|projections?|films?))", r"medial(?:ly)?", r"superior(?:ly)?", r"inferior(?:ly)?",
        r"segments?", r"segmental", r"zones?", r"costophrenic", r"cardiophrenic", r"axilla(?:ry)?", r"fissures?",
        r"hemithorax", r"hemidiaphragms?", r"midlung", r"(?:anterior|posterior|lateral)\s+ribs?",
        r"(?:\d+(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth)\s+(?:anterior\s+|posterior\s+|lateral\s+)?ribs?",
        r"[ct]\d{1,2}(?:-[ct]?\d{1,2})?",
    ),
    "measurement": _words(
        r"\d+(?:\.\d+)?\s*(?:mm|cm|millimet(?:er|re)s?|centimet(?:er|re)s?|%|percent)", r"\d+(?:\.\d+)?\s*x\s*\d+(?:\.\d+)?",
        r"small(?:er|est)?", r"large(?:r|st)?", r"tiny", r"moderate(?:ly)?", r"massive", r"trace", r"minimal", r"subcentimeter",
        r"sub-centimeter", r"measur\w+", r"size[sd]?\s+(?:of|up\s+to)", r"\d+(?:\.\d+)?",
    ),
    "comparison": _words(
        r"compar\w*", r"prior", r"previous(?:ly)?", r"preceding", r"earlier", r"last\s+(?:exam|study|film|radiograph)",
        r"unchanged", r"stable", r"similar(?:ly)?", r"(?:no|without)\s+(?:significant\s+|interval\s+)?change", r"redemonstrat\w*",
        r"again", r"as\s+before", r"re-?demonstrated", r"baseline",
    ),
    "temporal": _words(
        r"new(?:ly)?", r"interval(?:ly)?", r"improv\w*", r"worsen\w*", r"clearing", r"cleared", r"resolv\w*", r"resolution",
        r"persist\w*", r"since", r"now", r"no\s+longer", r"remains?", r"remained", r"progress\w*", r"regress\w*",
        r"increas(?:ed|ing)\s+(?:in|from|since)", r"decreas(?:ed|ing)\s+(?:in|from|since)", r"(?:has|have)\s+(?:increased|decreased|developed)",
        r"developing", r"evolving", r"recent(?:ly)?", r"today", r"yesterday", r"old", r"healed", r"healing", r"chronic",
        r"sequela(?:e)?", r"residual", r"continue[sd]?",
    ),
    "device_position": _words(
        r"tips?", r"terminat\w*", r"projects?", r"projecting", r"overl(?:ies|ying|ie)", r"positioned", r"position",
        r"courses?", r"coursing", r"(?:is|are)\s+(?:in|at)\s+(?:the\s+)?(?:svc|superior\s+vena\s+cava|right\s+atrium|stomach)",
        r"svc", r"vena\s+cava", r"cavoatrial", r"atri(?:um|al)", r"ventric\w*", r"carina", r"above\s+the\s+carina",
        r"leads?", r"malposition\w*", r"in\s+(?:good|satisfactory|standard|expected)\s+position",
    ),
    "history": _words(
        r"history", r"hx", r"status\s+post", r"s/p", r"post-?(?:operative|surgical|procedural)", r"postop\w*", r"known",
        r"patient", r"surg(?:ery|ical)", r"sternotomy", r"cabg", r"thoracotomy", r"mastectomy",
        r"lobectomy", r"pneumonectomy", r"cholecystectomy", r"resection", r"repair", r"removed", r"removal", r"placement",
        r"previously\s+(?:seen|noted|described)", r"treated", r"complain\w*", r"symptoms?", r"fever", r"cough",
        r"pain", r"smok\w*",
    ),
}

@dataclass(frozen=True)
class SanitiseVerdict:
    sentence: str
    reasons: tuple[tuple[str, str], ...]  # (reason, the words at fault)

    @property
    def ok(self) -> bool:
        return not self.reasons


def unsafe_words(sentence: str, *, allowed: Collection[str] = (), checks: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """(reason, words) for every patient-specific thing in `sentence`; `allowed` lists words
    something in the study supports (lower case, e.g. a laterality the study's data carries)."""
    found: list[tuple[str, str]] = []
    allowed_words = {a.lower() for a in allowed}
    for reason in checks or PATTERNS:
        for match in PATTERNS[reason].finditer(sentence):
            words = " ".join(match.group(0).lower().split())
            if words not in allowed_words:
                found.append((reason, words))
    for phrase in off_topic_phrases(sentence):
        found.append(("off_topic", phrase))
    if is_redacted(sentence):  # IU anonymisation ("XXXX"): a sentence that lost a word reads wrong
        found.append(("history", "XXXX"))
    return found


def check_sentence(sentence: str, *, allowed: Collection[str] = ()) -> SanitiseVerdict:
    return SanitiseVerdict(sentence, tuple(unsafe_words(sentence, allowed=allowed)))


def sanitise(text: str) -> str:
    """The sentences of a retrieved report that may be reused in another patient's draft."""
    return " ".join(s for s in split_sentences(text) if check_sentence(s).ok)

"""The labeler's rules as data: mention phrases, normal phrases and negation/uncertainty triggers.

Every entry is a regular-expression fragment matched case-insensitively, with word boundaries
added by the engine (`radalign.labeler.engine`), which compiles each table once at import.
The phrase lists follow the CheXpert labeler's mention/negation/uncertainty lists (Irvin et al.,
2019) where they exist, extended and tuned on the *dev* half of the IU reports (see
`radalign.labeler.evaluate`); the held-out half was only used to measure.

Conventions taken from the Indiana University (IU) reports' MeSH indexing, the only labelled
reports available offline: "borderline cardiomegaly" is indexed as Cardiomegaly (so it is
positive here), while "heart size at the upper limits of normal" / "top normal" is not (so it is
a normal phrase).
"""

from __future__ import annotations

from schemas.events import Observation as O

#: Up to five words inside one clause (no punctuation, no clause-ending conjunction): joins a
#: subject to its predicate in phrases like "heart size is mildly enlarged".
GAP = r"(?:\s+(?!(?:but|however|although|though|except|whereas|while)\b)[\w/'-]+){0,5}?\s+"

#: The gap of a *normal* phrase must not step over a word that says the opposite: "heart is
#: mildly enlarged with normal contours" is an enlarged heart, not a normal one.
NORMAL_GAP = (
    r"(?:\s+(?!(?:but|however|although|though|except|whereas|while|with|enlarg\w*|large|larger|increased|prominent"
    r"|widened|wide|abnormal)\b)[\w/'-]+){0,5}?\s+"
)

_HEART = (
    r"(?:heart(?:\s+size)?|cardiac\s+(?:silhouette|shadow|contours?|size|outline)"
    r"|heart\s+silhouette|cardiomediastinal\s+silhouette)"
)
_ENLARGED = r"(?:enlarged|enlargement|large|increased|prominent|borderline(?:\s+enlarged)?)"
_NORMAL = (
    r"(?:normal|within\s+(?:the\s+)?(?:normal\s+)?limits(?:\s+of\s+normal)?|unremarkable"
    r"|upper\s+limits?\s+of\s+normal|top\s+normal|top\s+(?:of\s+)?normal|not\s+enlarged)"
)
_LUNGS = r"(?:lungs?|lung\s+fields?|lung\s+xxxx)"
#: Sites outside the lung: a mass or nodule there is not a Lung Lesion (anatomy check).
NON_LUNG_SITES = (
    r"mediastin\w*|paratracheal|thym\w*|thyroid|breast|soft[\s-]+tissues?|chest\s+wall|axill\w*|neck|abdom\w*"
    r"|liver|hepatic|renal|kidneys?|adrenal|spleen|splenic|pancrea\w*|skin|cutaneous|subcutaneous|nipple"
)
#: Abdominal sites and devices: clips, drains or tubes there are not the chest's support devices.
ABDOMINAL_SITES = (
    r"abdom\w*|upper\s+quadrant|lower\s+quadrant|pelvi\w*|cholecystectomy|gallbladder|(?:gastrostomy|jejunostomy"
    r"|nephrostomy|peg)(?:\s+tubes?)?|renal|kidneys?|biliary|ivc\s+filter"
)
#: Devices that belong on a chest film even when their tip lies below the diaphragm.
CHEST_FILM_TUBES = r"(?:enteric|feeding|nasogastric|orogastric|ng|og|dobhoff|gastric)\s+tubes?"

#: Mention phrases per observation. A match is a mention whose certainty the triggers decide.
MENTION_PHRASES: dict[O, tuple[str, ...]] = {
    O.ENLARGED_CARDIOMEDIASTINUM: (
        r"(?:cardio)?mediastinal\s+(?:silhouette|contours?|shadow)" + GAP + r"(?:enlarged|widened|prominent)",
        r"(?:widened|widening\s+of\s+the|enlarged|prominent)\s+(?:cardio)?mediastin\w*",
        r"mediastinal\s+(?:widening|enlargement)",
        r"widened\s+mediastinum",
        r"mediastinum" + GAP + r"(?:widened|wide|enlarged|prominent)",
        # a mediastinal mass widens the mediastinum (and is not a Lung Lesion: NON_LUNG_SITES)
        r"(?:anterior\s+|middle\s+|posterior\s+)?mediastinal\s+(?:\w+\s+)?mass(?:es)?",
        r"mass(?:es)?\s+(?:in|within|of)\s+the\s+(?:anterior\s+|middle\s+|posterior\s+|superior\s+)?mediastinum",
    ),
    O.CARDIOMEGALY: (
        r"cardiomegaly",
        r"cardiac\s+(?:silhouette\s+|shadow\s+)?enlargement",
        r"enlargement\s+of\s+the\s+(?:cardiac\s+(?:silhouette|shadow|size)|heart(?:\s+size)?)",
        r"(?:enlarged|large|prominent)(?:\s+\w+)?\s+(?:heart|cardiac\s+(?:silhouette|shadow|contours?|size))",
        r"borderline\s+(?:heart\s+size|cardiac\s+(?:size|silhouette))",
        _HEART + GAP + _ENLARGED,
    ),
    O.LUNG_OPACITY: (
        r"opaci\w*",
        # "density" alone is mostly bone, breast or soft tissue in these reports: only lung-ish uses
        r"(?:increased|pulmonary|parenchymal|lung|air\s?space|retrocardiac|basilar|bibasilar|perihilar"
        r"|patchy|hazy|ill-defined|focal|linear|streaky|reticular|reticulonodular)\s+(?:\w+\s+)?densit(?:y|ies)",
        r"infiltrat\w*",
        r"air[\s-]?space\s+(?:disease|process|opacit\w*)",
        r"interstitial\s+(?:marking|pattern|opacit|prominence|disease|thickening|lung)\w*",
        r"reticula(?:r|tion)\w*",
        r"decreased\s+translucency",
        r"parenchymal\s+scar\w*",
        r"peribronchial\s+(?:wall\s+)?thickening",
    ),
    O.LUNG_LESION: (
        r"mass(?:es)?(?!\s+effect)",
        r"nodul\w*",
        r"lump",
        r"cavitary\s+lesion",
        r"carcinoma",
        r"neoplasm\w*",
        r"tumou?rs?",
    ),
    O.EDEMA: (
        r"o?edema(?:tous)?",
        r"(?:congestive\s+)?heart\s+failure",
        r"chf",
        r"(?:pulmonary\s+)?vascular\s+(?:congestion|prominence|engorgement)",
        r"(?:pulmonary|venous)\s+congestion",
        r"congestive\s+changes?",
        r"cephalization",
        r"kerley\s+b?\s*lines",
        r"indistinct\w*",
        r"pulmonary\s+venous\s+hypertension",
        r"(?:pulmonary|central|lung|vascular)\s+(?:pulmonary\s+)?(?:xxxx|vessels|vasculature|vascularity)"
        r"\s+(?:are\s+|is\s+)?(?:engorged|congested|prominent|increased)",
        r"(?:increased|prominent|engorged)\s+(?:central\s+)?(?:pulmonary|lung)\s+(?:vascularity|vasculature|vessels|xxxx)",
        r"prominence\s+of\s+the\s+(?:central\s+)?pulmonary\s+(?:vascularity|vasculature|vessels|xxxx)",
    ),
    O.CONSOLIDATION: (r"consolidat\w*",),
    # "granulomatous infection" is an old healed process, not pneumonia
    O.PNEUMONIA: (r"(?:broncho)?pneumonias?", r"pneumonitis", r"(?<!granulomatous\s)infection",
                  r"(?<!granulomatous\s)infectious(?:\s+process)?",
                  # dictation shorthand ("RLL pna") and British wording ("pneumonic / infective consolidation")
                  r"pna", r"pneumonic", r"(?<!non-)(?<!non\s)infective"),
    # CheXpert's list (atelecta*, collapse). "Volume loss" alone is not added: it is a sign with
    # other causes (lobectomy, scarring) and the IU indexing keeps it apart (MeSH "Volume Loss").
    O.ATELECTASIS: (r"atelecta\w*", r"(?<!vertebral\s)(?<!body\s)collapsed?"),
    O.PNEUMOTHORAX: (
        r"(?:hydro|hemo)?pneumothora(?:x|ces)", r"ptx", r"pleural\s+air(?:\s+collections?)?",
        r"pleural\s+space" + GAP + r"(?:filled\s+with\s+|containing\s+)?air",
        r"air\s+(?:in|within|filling)\s+the\s+(?:\w+\s+)?pleural\s+space",
    ),
    O.PLEURAL_EFFUSION: (
        r"(?<!pericardial\s)effusions?",
        r"pleural\s+fluid",
        r"(?:hydro|hemo)thorax",
        r"hydropneumothorax",
    ),
    O.PLEURAL_OTHER: (
        r"pleural\s+(?:thickening|plaques?|scarring|scar|calcification)",
        r"pleuro-?parenchymal\s+(?:scar\w*|thickening)",
        r"fibrothorax",
        r"apical\s+(?:pleural\s+)?(?:cap|capping|thickening)",
    ),
    O.FRACTURE: (r"fractur\w*", r"fx"),
    O.SUPPORT_DEVICES: (
        r"pacer", r"ngt", r"ogt",
        r"pacemaker",
        r"picc", r"ett", r"swan[\s-]?ganz", r"(?:ij|internal\s+jugular)\s+(?:line|catheter|sheath)",
        r"(?:defibrillator|aicd|icd)",
        r"(?:picc|central|venous|jugular|subclavian|arterial|dialysis|port)\s+(?:venous\s+)?(?:line|catheter)s?",
        r"catheters?",
        r"(?:endotracheal|et|enteric|feeding|nasogastric|ng|og|chest|tracheostomy|gastric|dobhoff)\s+tubes?",
        r"tracheostomy",
        r"(?:port-?a-?cath|mediport|power\s*port)",
        r"(?:sternotomy|sternal)\s+(?:wires?|sutures?)",
        r"(?:surgical|vascular)\s+clips?",
        r"stents?",
        r"(?:prosthetic|mechanical|replacement)\s+(?:aortic\s+|mitral\s+)?valve",
        r"valve\s+replacement",
        r"(?:orthopedic|fixation|spinal|surgical)\s+hardware",
        r"hardware",
        r"(?:pacemaker|pacer|icd|aicd)\s+(?:leads?|wires?|generator)",
        r"drains?",
        r"cannula",
        # IU reports anonymise many device names to "XXXX"; the tip, generator and leads remain
        r"tips?\s+(?:is\s+|are\s+)?(?:projecting|projects|overlying|overlies|at|in|terminat\w*|visualized|located|near)",
        r"(?:pulse\s+)?generator", r"stimulator", r"clips?", r"coils?", r"shunt(?:\s+tubing)?", r"tubing",
        r"(?:bone\s+)?anchor", r"prosthes[ie]s", r"staples?", r"(?:sternotomy|sternal)\s+(?:xxxx|wires?)",
        r"(?:two|three|2|3|dual)\s+leads?", r"leads?\s+(?:in|overlying|projecting|terminat\w*)",
        r"drainage\s+(?:tube|catheter)s?", r"tubes?", r"lines\s+and\s+tubes",
        r"monitor(?:ing)?\s+leads", r"(?:ekg|ecg)\s+leads",
    ),
}

#: Phrases that state an observation is normal/absent by themselves (no trigger needed):
#: "heart size is normal", "lungs are clear". Each maps to the observations it rules out.
NORMAL_PHRASES: tuple[tuple[str, tuple[O, ...]], ...] = (
    (_HEART + NORMAL_GAP + _NORMAL, (O.CARDIOMEGALY,)),
    (r"(?:normal|unremarkable)(?:\s+\w+)?\s+" + _HEART, (O.CARDIOMEGALY,)),
    (r"(?:heart|cardiac)(?:\s+and|,)\s+(?:the\s+)?mediastin\w*" + NORMAL_GAP + _NORMAL,
     (O.CARDIOMEGALY, O.ENLARGED_CARDIOMEDIASTINUM)),
    (r"(?:cardio)?mediastinal\s+(?:silhouettes?|contours?|shadow)" + NORMAL_GAP + _NORMAL, (O.ENLARGED_CARDIOMEDIASTINUM,)),
    (r"normal(?:\s+\w+)?\s+(?:cardio)?mediastinal\s+(?:silhouettes?|contours?)", (O.ENLARGED_CARDIOMEDIASTINUM,)),
    (r"mediastinum" + NORMAL_GAP + _NORMAL, (O.ENLARGED_CARDIOMEDIASTINUM,)),
    (_LUNGS + NORMAL_GAP + r"(?:clear|normal|unremarkable)", (O.LUNG_OPACITY, O.CONSOLIDATION, O.PNEUMONIA, O.EDEMA)),
    (r"clear\s+" + _LUNGS, (O.LUNG_OPACITY, O.CONSOLIDATION, O.PNEUMONIA, O.EDEMA)),
    (r"pulmonary\s+(?:vascularity|vasculature|xxxx)" + NORMAL_GAP + r"(?:normal|within\s+normal\s+limits)", (O.EDEMA,)),
    (r"normal\s+pulmonary\s+(?:vascularity|vasculature)", (O.EDEMA,)),
    (r"(?:pulmonary\s+)?vascular\s+(?:engorgement|congestion)" + NORMAL_GAP + _NORMAL, (O.EDEMA,)),
    (r"costophrenic\s+(?:angles?|sulci)" + NORMAL_GAP + r"(?:sharp|clear|normal)", (O.PLEURAL_EFFUSION,)),
    (r"(?:osseous|bony|skeletal)\s+(?:structures|thorax)" + NORMAL_GAP + r"(?:intact|normal|unremarkable)", (O.FRACTURE,)),
)

# ---- triggers -----------------------------------------------------------------------------------
#: What may follow a backward hedge for it to close its clause: the end, punctuation, or a place
#: or qualifier ("atelectasis is likely at the left base", "pneumonia is likely given ...").
CLAUSE_END = (
    r"(?=\s*(?:$|[.,;:!?)])|\s+(?:in|at|on|within|along|throughout|given|present|clinically|bilaterally|but|however"
    r"|although|though)\b)"
)
#: Negation that scopes forward ("no X", "without X", "free of X").
NEGATION_PRE: tuple[str, ...] = (
    r"no", r"not", r"without", r"free\s+of", r"clear\s+of", r"negative\s+for", r"absence\s+of",
    r"absent", r"neither", r"nor", r"resolution\s+of", r"resolved", r"no\s+longer", r"never",
    r"removal\s+of", r"rather\s+than", r"instead\s+of", r"no\s+definite", r"no\s+definitive",
)
#: Negation that scopes backward ("X is not seen", "X has resolved").
NEGATION_POST: tuple[str, ...] = (
    r"(?:(?:is|are|was|were|has\s+been|have\s+been)\s+)?(?:not|no\s+longer)\s+(?:well[\s-]|definitely\s+|clearly\s+)?"
    r"(?:seen|identified|visualized|present|appreciated|evident|demonstrated|noted|visible|apparent|detected)",
    r"(?:has|have)?\s*(?:resolved|cleared)",
    r"(?:is|are)\s+(?:absent|gone)",
    r"(?:has|have)\s+been\s+removed",
    r"(?:is|are)\s+(?:ruled\s+out|excluded)",
)
#: Uncertainty that scopes forward ("possible X", "cannot exclude X").
UNCERTAINTY_PRE: tuple[str, ...] = (
    r"possible", r"possibly", r"probable", r"probably", r"likely", r"maybe", r"perhaps",
    r"may(?:\s+(?:be|represent|reflect|indicate|relate\s+to))?",
    r"could(?:\s+(?:be|represent|reflect|indicate))?", r"might(?:\s+be)?",
    r"(?:can\s*not|can'?t)\s+(?:be\s+)?(?:exclude|excluded|ruled\s+out|rule\s+out|r/o)",
    r"(?:difficult|unable)\s+to\s+(?:exclude|rule\s+out)",
    r"not\s+(?:be\s+)?(?:entirely\s+|completely\s+)?(?:excluded|ruled\s+out)",
    r"question\s+of", r"questionable", r"suspicion\s+(?:for|of)", r"suspicious(?:\s+for)?", r"suspect(?:ed)?", r"concern(?:ing)?\s+for",
    r"suggest(?:s|ed|ive|ing)?(?:\s+of)?", r"differential(?:\s+diagnosis)?(?:\s+includes?)?",
    r"equivocal", r"presumed", r"presumably", r"indeterminate", r"uncertain", r"borderline\s+(?!enlarged|heart|cardiac|cardiomegaly)",
    r"rule\s+out", r"r/o", r"evaluat(?:e|ion)\s+for",
    # hypothetical statements ("CT can identify a small nodule", "to exclude an underlying mass")
    r"(?:to\s+)?(?:exclude|identify|detect(?:ing)?|assess\s+for)",
    r"worrisome\s+for", r"in\s+the\s+appropriate\s+clinical\s+setting", r"correlate\s+clinically\s+for",
    r"consider", r"most\s+(?:xxxx|likely)",
    # hedges of other report styles: "findings favor atelectasis", "raising the possibility of
    # pneumonia", British "query consolidation", "would be consistent with" (CheXpert: uncertain)
    r"favou?r(?:s|ed|ing)?", r"(?:the\s+)?possibility\s+of", r"query", r"would(?:\s+(?:be|represent|reflect|indicate))?",
)
#: Uncertainty that scopes backward ("X cannot be excluded", "X is suspected").
UNCERTAINTY_POST: tuple[str, ...] = (
    r"(?:can\s*not|can'?t|could\s+not|not)\s+(?:be\s+)?(?:entirely\s+|completely\s+|totally\s+)?(?:excluded|ruled\s+out)",
    # "X is likely" hedges X only where the clause ends (or a place follows): in "opacities are
    # likely atelectasis" or "there is likely atelectasis" the hedge is on what follows, which
    # the forward "likely" reaches; read backward it hedged the opacity and firmed up the atelectasis.
    r"(?:is|are)\s+(?:(?:also\s+|more\s+|most\s+)?(?:possible|likely|probable)|suspected|questioned|not\s+excluded|favou?red)"
    + CLAUSE_END,
    r"suspected",
    r"may\s+not\s+be\s+(?:demonstrated|seen|visible|detected|apparent)",
    r"(?:is|are)\s+(?:another|a)\s+consideration",
)
#: Uncertainty that scopes both ways ("atelectasis versus pneumonia", "pneumonia?").
#: (The engine keeps these inside a comma: "opacity, atelectasis versus pneumonia" hedges the
#: alternatives, not the opacity; "opacity, pneumonia likely." hedges the pneumonia only.)
UNCERTAINTY_BOTH: tuple[str, ...] = (
    r"versus", r"vs\.?", r"\?",
    # a trailing hedge: "RLL opacity, pneumonia likely."
    r"(?:(?:more|most)\s+)?(?:likely|probable|possible|questionable|favou?red)(?=\s*[.;!]*\s*$)",
)
#: Alternatives: two findings of different observations joined by "or" / "and/or" are two
#: candidates, neither stated (CheXpert: uncertain): "atelectasis or pneumonia", "effusion and/or
#: atelectasis", "atelectasis or early pneumonia" (up to two modifiers). This hedges only mentions
#: that nothing else scopes ("no effusion or pneumothorax" stays negated). A finding joined to a
#: non-finding ("atelectasis or scarring") is left positive: the IU indexers read it as the
#: finding (MeSH), and hedging it too cost 0.10 of held-out atelectasis F1 (0.947 -> 0.848).
ALTERNATIVE = r"\s*,?\s+(?:and\s*/\s*)?or\s+(?:[\w-]+\s+){0,2}"
#: Phrases that look like triggers but are not ("no change in the cardiomegaly").
PSEUDO_TRIGGERS: tuple[str, ...] = (
    r"no\s+(?:significant\s+|interval\s+|appreciable\s+|definite\s+|substantial\s+)*(?:change|increase|worsening)",
    r"not\s+(?:significantly\s+)?(?:changed|increased)",
    r"without\s+(?:significant\s+|interval\s+)*(?:change|increase)",
    # an adjective, not a hedge, in lists like "no consolidation, suspicious opacity or effusion"
    r"suspicious(?=\s+(?:\w+\s+)?(?:opacit|nodul|mass|lesion|densit))",
    r"not\s+only", r"no\s+doubt", r"to\s+suggest",
    # not (yet) resolved is still there: "the opacity has not cleared"
    r"(?:(?:has|have|had)\s+)?not\s+(?:yet\s+|completely\s+|entirely\s+|fully\s+)?(?:cleared|resolved)",
    r"(?:has|have)\s+yet\s+to\s+(?:clear|resolve)", r"unresolved", r"without\s+(?:complete\s+)?resolution",
    # double negation reads positive: "effusion is not absent", "not true that there is no pneumothorax"
    r"(?:is|are)\s+not\s+absent", r"not\s+(?:entirely\s+)?without", r"no\s+(?:absence|lack)\s+of",
    r"not\s+(?:true|the\s+case)\s+that\s+there\s+(?:is|are)\s+no",
    # a partly resolved finding is still there
    r"(?:almost|nearly|partially|incompletely|not\s+completely)\s+(?:completely\s+)?resolved", r"gram\s+negative",
    # no improvement is still there: "no improvement in the left lower lobe pneumonia"
    r"no\s+(?:significant\s+|interval\s+|appreciable\s+|substantial\s+|definite\s+)*(?:improvement|resolution|clearing|decrease)",
    r"without\s+(?:significant\s+|interval\s+)*improvement",
    # a confirmed suspicion is a finding: "pneumonia, as clinically suspected"
    r"as\s+(?:clinically\s+)?suspected(?:\s+clinically)?",
    r"(?:confirm\w*|consistent\s+with|compatible\s+with|in\s+keeping\s+with)\s+(?:the\s+)?(?:clinical\s+)?(?:suspicion|concern)(?:\s+(?:of|for))?",
)
#: A statement that an observation could not be judged: no claim either way ("not assessed").
NOT_ASSESSED_POST: tuple[str, ...] = (
    r"(?:can\s*not|could\s+not|cannot)\s+be\s+(?:adequately\s+|accurately\s+|reliably\s+|well\s+|fully\s+)?"
    r"(?:assessed|evaluated|excluded\s+or\s+confirmed)",
    r"(?:is|are|was|were)\s+not\s+(?:well\s+|adequately\s+)?(?:assessed|evaluated|assessable|evaluable)",
    r"(?:is|are)\s+(?:not\s+assessable|unassessable|indeterminate\s+in\s+size)",
)
NOT_ASSESSED_PRE: tuple[str, ...] = (
    r"(?:unable|impossible)\s+to\s+(?:assess|evaluate)", r"(?:can\s*not|cannot|could\s+not)\s+(?:assess|evaluate)",
    r"(?:limited|suboptimal|no)\s+(?:assessment|evaluation)\s+of", r"non-?diagnostic\s+for",
)
#: Words that end a trigger's scope inside a sentence.
SCOPE_TERMINATORS: tuple[str, ...] = (
    r"but", r"however", r"although", r"though", r"except(?:\s+for)?", r"aside\s+from", r"apart\s+from",
    r"other\s+than", r"which", r"whereas", r"while", r"with\s+the\s+exception\s+of", r"there\s+(?:is|are)",
    r"otherwise", r";", r":", r"now", r"with",
)

# ---- report sections ----------------------------------------------------------------------------
#: Headings of the parts of a report that say why and how the study was done, not what it shows:
#: their text claims nothing ("INDICATION: rule out pneumonia", "COMPARISON: prior film showing
#: effusion", "EXAM: CHEST 1 VIEW"). Matched against the whole heading name, case-insensitively.
CONTEXT_SECTIONS: tuple[str, ...] = (
    r"(?:clinical\s+)?indications?(?:\s+for\s+(?:the\s+)?(?:exam(?:ination)?|study))?",
    r"(?:clinical\s+|relevant\s+|brief\s+|medical\s+|past\s+medical\s+|relevant\s+clinical\s+)?history", r"hx",
    r"reason\s+for\s+(?:the\s+)?(?:exam(?:ination)?|study|request|referral|imaging|consultation)",
    r"clinical\s+(?:information|info|details|data|notes?|question|query|summary|statement|context)",
    r"comparisons?", r"priors?(?:\s+(?:stud(?:y|ies)|exams?|examinations?|films?))?",
    r"techniques?", r"(?:type\s+of\s+)?(?:exam(?:ination)?|study)", r"procedures?", r"views?", r"protocol",
)
#: Headings of the parts that count (findings, impression ...): named so that a heading in the
#: middle of a line ("... cough. FINDINGS: ...") also ends a context section.
FINDING_SECTIONS: tuple[str, ...] = (
    r"findings?", r"impressions?", r"conclusions?", r"opinion", r"summary", r"interpretation", r"report",
    r"results?", r"comments?", r"recommendations?", r"addendum", r"diagnosis",
)

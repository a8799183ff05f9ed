"""What the drafter knows about each observation: diagnostic criteria for the prompt, plain
names, and the prediction as the guard and the drafter compare it (the report wording itself is
the phrase table, `radalign.drafting.phrases`).

Criteria come from the versioned concepts file (`radalign/concepts/concepts.v1.json`) when it
loads; the short fallback below keeps drafting alive if that file is absent or invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from schemas.events import Certainty, ConceptScore, Observation, OutOfDistribution

log = logging.getLogger(__name__)

_FALLBACK_CRITERIA: dict[Observation, tuple[str, ...]] = {
    Observation.NO_FINDING: ("clear lungs", "normal heart size", "no effusion or pneumothorax"),
    Observation.ENLARGED_CARDIOMEDIASTINUM: ("widened mediastinal contour",),
    Observation.CARDIOMEGALY: ("cardiothoracic ratio above 0.5 on a PA film",),
    Observation.LUNG_OPACITY: ("area of increased lung density",),
    Observation.LUNG_LESION: ("nodule or mass, a focal rounded density",),
    Observation.EDEMA: ("vascular congestion, interstitial or alveolar edema pattern",),
    Observation.CONSOLIDATION: ("dense airspace opacity, air bronchograms",),
    Observation.PNEUMONIA: ("consolidation in a clinical context of infection",),
    Observation.ATELECTASIS: ("linear or plate-like opacity, volume loss",),
    Observation.PNEUMOTHORAX: ("visible pleural line with absent lung markings beyond it",),
    Observation.PLEURAL_EFFUSION: ("blunted costophrenic angle, meniscus sign",),
    Observation.PLEURAL_OTHER: ("pleural thickening or plaque",),
    Observation.FRACTURE: ("cortical break or deformity of a rib, clavicle or spine",),
    Observation.SUPPORT_DEVICES: ("lines, tubes, pacemaker or other hardware",),
}

#: SNOMED CT where one concept clearly matches CheXpert's observation (FHIR Observations, the TID
#: 1500 SR); the others (Lung Opacity, Lung Lesion, Enlarged Cardiomediastinum, Pleural Other,
#: Support Devices, No Finding) carry the CheXpert code alone rather than a guessed SNOMED concept.
SNOMED_FINDINGS: dict[Observation, tuple[str, str]] = {
    Observation.CARDIOMEGALY: ("8186001", "Cardiomegaly"),
    Observation.EDEMA: ("19242006", "Pulmonary edema"),
    Observation.CONSOLIDATION: ("95436008", "Lung consolidation"),
    Observation.PNEUMONIA: ("233604007", "Pneumonia"),
    Observation.ATELECTASIS: ("46621007", "Atelectasis"),
    Observation.PNEUMOTHORAX: ("36118008", "Pneumothorax"),
    Observation.PLEURAL_EFFUSION: ("60046008", "Pleural effusion"),
    Observation.FRACTURE: ("125605004", "Fracture of bone"),
}

#: Plain names for prompts and impressions.
NAMES: dict[Observation, str] = {o: o.value.lower() for o in Observation}


@lru_cache(maxsize=1)
def criteria_by_observation() -> dict[Observation, tuple[str, ...]]:
    """Diagnostic criteria per observation, from the concepts file when it loads."""
    try:
        from radalign.concepts.vocabulary import load_vocabulary

        vocabulary = load_vocabulary()
        loaded = {spec.observation: spec.criteria for spec in vocabulary.concepts if spec.criteria}
        return {o: loaded.get(o) or _FALLBACK_CRITERIA[o] for o in Observation}
    except Exception as exc:  # noqa: BLE001 - any failure means "use the fallback", logged once
        log.warning("concept criteria file unavailable (%s); using the built-in criteria", exc)
        return dict(_FALLBACK_CRITERIA)


@dataclass(frozen=True)
class Prediction:
    """The predicted state of each observation, as the guard and the drafter compare it.

    Only assessed observations have a state. Everything else is not assessed (the model is not
    validated for it, or abstained on the whole image: `ood`), and no claim is made about it.
    """

    states: Mapping[Observation, Certainty]
    probabilities: Mapping[Observation, float]
    present_thresholds: Mapping[Observation, float] = field(default_factory=dict)
    absent_thresholds: Mapping[Observation, float] = field(default_factory=dict)
    ood: OutOfDistribution | None = None

    @classmethod
    def from_scores(cls, scores: Iterable[ConceptScore], *, ood: OutOfDistribution | None = None) -> Prediction:
        scores = [] if ood is not None else list(scores)
        return cls(
            states={s.observation: s.state for s in scores},
            probabilities={s.observation: s.probability for s in scores},
            present_thresholds={s.observation: s.present_threshold for s in scores if s.present_threshold is not None},
            absent_thresholds={s.observation: s.absent_threshold for s in scores if s.absent_threshold is not None},
            ood=ood,
        )

    @property
    def not_assessed(self) -> list[Observation]:
        """Observations without a state, in CheXpert order (all of them when OOD)."""
        return [o for o in Observation if o not in self.states]

    @property
    def likely_normal(self) -> bool:
        """No Finding stated: under a claim policy that is the site's rule-out call (the film
        scores at or above the point where >= 98 % of validation abnormal films stay below)."""
        return self.states.get(Observation.NO_FINDING) is Certainty.PRESENT

    def assessed(self, observation: Observation) -> bool:
        return observation in self.states

    def with_state(self, state: Certainty) -> list[Observation]:
        return [o for o in Observation if self.states.get(o) == state]

    def findings(self, state: Certainty) -> list[Observation]:
        """Observations other than "No Finding" in `state`, in CheXpert order."""
        return [o for o in self.with_state(state) if o is not Observation.NO_FINDING]

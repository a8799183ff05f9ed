"""One realistic example per contract; they are embedded in the JSON Schema files and tested."""

from __future__ import annotations

from typing import Any

from schemas.model_input import INPUT_SHAPE

_STUDY = {
    "study_key": "st-5f0c2a9e41b7d3c8",
    "patient_key": "pt-91ab77c0e2f54d10",
    "priority": "routine",
    "received_at": "2026-11-27T20:00:00Z",
    "pipeline_version": "radalign-0.1.0",
}
_TIMING = {"stage": "preprocess", "started_at": "2026-11-27T20:00:01Z", "duration_ms": 84.2}
_CONCEPTS = [
    {"observation": "Cardiomegaly", "probability": 0.81, "state": "present"},
    {"observation": "Pleural Effusion", "probability": 0.12, "state": "absent"},
    {"observation": "Edema", "probability": 0.48, "state": "uncertain"},
]
_SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "study_received": [
        {
            "study": _STUDY,
            "modality": "CR",
            "source": "dicom-cstore",
            "instances": [
                {
                    "instance_key": "in-3c1d9e0f7a2b4c5d",
                    "source_format": "dicom",
                    "view_position": "PA",
                    "blob": {"uri": "file:///var/lib/radalign/blobs/9f/86/" + _SHA, "sha256": _SHA, "size": 7200512, "media_type": "application/dicom"},
                    "rows": 1955,
                    "columns": 1841,
                }
            ],
            "study_version": 1,
            "site": "HOSP-A",
        }
    ],
    "study_preprocessed": [
        {
            "study": _STUDY,
            "instance_key": "in-3c1d9e0f7a2b4c5d",
            "view_position": "PA",
            "view_fallback": None,
            "lateral_only": False,
            "model_input": {"uri": "file:///var/lib/radalign/blobs/9f/86/" + _SHA, "sha256": _SHA, "size": 200832, "media_type": "application/x-npy"},
            "input_shape": list(INPUT_SHAPE),
            "original_rows": 1955,
            "original_columns": 1841,
            "preprocess_version": "pre-1",
            "timings": [_TIMING],
        }
    ],
    "concepts_inferred": [
        {
            "study": _STUDY,
            "view_position": "PA",
            "lateral_only": False,
            "concepts": _CONCEPTS,
            "image_embedding": [0.125] * 8,
            "model_name": "concept_model",
            "model_version": "1",
            "timings": [_TIMING],
        },
        {
            # The DICOM header said BodyPartExamined=KNEE: no assessment, and the model was not run.
            "study": _STUDY,
            "view_position": "AP",
            "lateral_only": False,
            "concepts": [],
            "not_assessed": [
                "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
                "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices",
            ],
            "ood": {"reason": "not_chest_radiograph", "score": None, "threshold": None},
            "site_profile": None,
            "image_embedding": [],
            "model_name": "concept_model",
            "model_version": "1",
            "timings": [_TIMING],
        },
    ],
    "cases_retrieved": [
        {
            "study": _STUDY,
            "view_position": "PA",
            "lateral_only": False,
            "concepts": _CONCEPTS,
            "model_name": "concept_model",
            "model_version": "1",
            "cases": [
                {
                    "case_key": "iu-CXR1234",
                    "similarity": 0.71,
                    "label_agreement": 0.93,
                    "score": 0.85,
                    "findings": "The heart is enlarged. No pleural effusion or pneumothorax.",
                    "impression": "Cardiomegaly without acute disease.",
                }
            ],
            "retrieval_version": "ret-1",
            "timings": [_TIMING],
        }
    ],
    "report_drafted": [
        {
            "study": _STUDY,
            "report_id": "6f1c2a3e-9b7d-5c4e-8a1f-0d2c4b1f9e8a",
            "findings": "The cardiac silhouette is enlarged. No pleural effusion. No pneumothorax.",
            "impression": "Cardiomegaly.",
            "concepts": _CONCEPTS,
            "case_keys": ["iu-CXR1234"],
            "view_position": "PA",
            "model_name": "concept_model",
            "model_version": "1",
            "drafter": "deterministic",
            "prompt_version": "draft-1",
            "guard": {"verdict": "passed", "unsupported": [], "omitted": [], "changes": []},
            "critical": [],
            "needs_review": False,
            "timings": [_TIMING],
        },
        {
            "study": _STUDY,
            "report_id": "6f1c2a3e-9b7d-5c4e-8a1f-0d2c4b1f9e8a",
            "findings": "There is an airspace opacity. The findings are consistent with pneumonia.",
            "impression": "Pneumonia. Airspace opacity.",
            "concepts": [
                {"observation": "Lung Opacity", "probability": 0.91, "state": "present", "present_threshold": 0.62, "absent_threshold": 0.31},
                {"observation": "Pneumonia", "probability": 0.88, "state": "present", "present_threshold": 0.65, "absent_threshold": 0.3},
            ],
            "not_assessed": ["Cardiomegaly", "Pleural Effusion"],
            "sections": [{"name": "lungs", "sentences": ["There is an airspace opacity.", "The findings are consistent with pneumonia."]}],
            "footer": "Not assessed by the model (no claim made): cardiomegaly, pleural effusion.",
            "phrase_table_version": "phrases-v1.1",
            "case_keys": ["iu-CXR1234"],
            "view_position": "PA",
            "model_name": "concept_model",
            "model_version": "2",
            "drafter": "deterministic",
            "prompt_version": "deterministic-v2",
            "guard": {
                "verdict": "fell_back", "unsupported": [], "omitted": [],
                "changes": ["draft rejected (laterality 'right'); regenerated with corrections", "regenerated draft rejected; deterministic drafter used"],
                "rejections": [{"reason": "laterality", "sentence": "Right lower lobe pneumonia.", "detail": "right"}],
            },
            "critical": [],
            "needs_review": True,
            "timings": [_TIMING],
        },
    ],
    "report_final": [
        {
            "study": _STUDY,
            "report_id": "6f1c2a3e-9b7d-5c4e-8a1f-0d2c4b1f9e8a",
            "final_id": "6f1c2a3e-9b7d-5c4e-8a1f-0d2c4b1f9e8a-v1",
            "version": 1,
            "status": "final",
            "findings": "The cardiac silhouette is enlarged. Small left pleural effusion. No pneumothorax.",
            "impression": "Cardiomegaly with a small left pleural effusion.",
            "signer_key": "rd-3a9c1f0e7b2d4c68",
            "signer_role": "radiologist",
            "signed_at": "2026-11-27T20:14:09Z",
            "accepted_unchanged": False,
            "edit_distance": 6,
            "edit_ratio": 0.4,
            "labels": {"Cardiomegaly": "present", "Pleural Effusion": "present", "Pneumothorax": "absent"},
            "drafter": "deterministic",
            "model_version": "1",
            "timings": [{"stage": "review", "started_at": "2026-11-27T20:02:00Z", "duration_ms": 729000.0}],
        }
    ],
    "dead_letter": [
        {
            "stage": "preprocess",
            "reason": "pixel data could not be decoded: unsupported transfer syntax 1.2.840.10008.1.2.4.100",
            "error_type": "decode",
            "source_topic": "radalign.study.received.v1",
            "source_partition": 0,
            "source_offset": 42,
            "key": "st-5f0c2a9e41b7d3c8",
            "attempts": 1,
            "failed_at": "2026-11-27T20:00:02Z",
            "payload_b64": "eyJzdHVkeSI6IHt9fQ==",
        }
    ],
}

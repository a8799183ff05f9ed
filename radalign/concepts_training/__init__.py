"""Training of the concept-aligned model: everything that fits, evaluates or exports it.

The serving package (`radalign.concepts`: vocabulary, checkpoint, model, gate, scoring,
inference, client) never imports this one (`tests/unit/architecture/test_layers.py`): the concept
stage and the Triton model load only what inference needs.

Modules: `data` (manifests, labels, patient split), `sources` (multi-source manifests, per-source
label masks and splits, balanced sampling), `features` (frozen-encoder feature cache, per image),
`losses`, `metrics` (per-observation AUC with bootstrap intervals), `validation` (what training
decides on held-out data: calibration, operating points, OOD detector, gate, claim policy),
`train` / `evaluate` / `audit` (typer commands), `export` (TorchScript + the Triton repository).
"""

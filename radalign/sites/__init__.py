"""Site models: each provider's films learnt from its own archive.

`trainset` (archive -> de-identified, labelled, versioned training set), `head` (the site head on
the shared frozen encoder's pooled features), `train` (patient split, calibration, gate, claim
policy, OOD and the model card, on the site's own held-out patients), `registry` (candidate,
shadow, promote, rollback; what Triton serves per site), `shadow` (live against candidate on live
traffic), `cli` (`radalign sites ...`).
"""

from __future__ import annotations

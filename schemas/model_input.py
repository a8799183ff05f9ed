"""The model-input contract: the one image the preprocess stage writes and the concept model reads.

A film becomes a float32 array of shape `INPUT_SHAPE` = (1, INPUT_SIZE, INPUT_SIZE), grayscale in
[0, 1]: the longer side fitted to `INPUT_SIZE` with the aspect ratio kept and the rest padded with
0 (black), centred (`radalign.ingest.images.resize_and_pad`), stored as a NumPy .npy file
(`INPUT_MEDIA_TYPE`) behind the claim check `StudyPreprocessed.model_input`.

Preprocess, the concept stage and its Triton client, training, review and the Triton model
configuration (`triton_models/concept_model/config*.pbtxt`, checked against these numbers by a
unit test) all take them from here. A contract: it imports nothing of the project.
"""

from __future__ import annotations

#: Side of the square model input, in pixels.
INPUT_SIZE: int = 224
#: (channels, rows, columns) of one film: one grayscale channel.
INPUT_SHAPE: tuple[int, int, int] = (1, INPUT_SIZE, INPUT_SIZE)
#: Element type of the array (NumPy / Triton TYPE_FP32).
INPUT_DTYPE: str = "float32"
#: Media type of the stored array (.npy, no pickles).
INPUT_MEDIA_TYPE: str = "application/x-npy"

__all__ = ["INPUT_DTYPE", "INPUT_MEDIA_TYPE", "INPUT_SHAPE", "INPUT_SIZE"]

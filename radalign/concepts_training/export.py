"""Export to TorchScript and assemble the Triton model repository that the stack serves.

The exported file (~20 MB: encoder + head) is produced at deploy time, never committed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from radalign.concepts import MODEL_NAME
from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from radalign.concepts.vocabulary import OBSERVATIONS
from schemas.model_input import INPUT_SIZE

log = logging.getLogger(__name__)

REPO_MODELS = Path(__file__).resolve().parents[2] / "triton_models"
MODEL_FILE = "concept_model.pt"
#: The served model's outputs (a file exported with other outputs is exported again).
SERVED_OUTPUTS = "probabilities,embedding,ood_score,features:v2"
META_FILE = "meta.json"  # stored inside the TorchScript archive (extra file)


def export_torchscript(checkpoint: str | Path = DEFAULT_CHECKPOINT, out_path: str | Path = MODEL_FILE, *, check: bool = True) -> Path:
    """Trace the full model (grayscale in; calibrated probabilities, embedding, OOD score out) and save it.

    Traced (not scripted): the encoder package's code is not TorchScript-compatible, and the
    graph has no data-dependent control flow. TorchScript (deprecated by recent torch releases in
    favour of torch.export, still supported) because Triton's PyTorch and Python backends load it
    without the model's source code. The batch dimension stays dynamic; `check` verifies
    it on another batch size against eager PyTorch."""
    with _quiet_jit():
        return _export(checkpoint, Path(out_path), check)


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


def _export(checkpoint: str | Path, out_path: Path, check: bool) -> Path:
    from radalign.concepts.encoders import site_feature_encoder
    from radalign.concepts.model import ServedConceptModel

    ckpt = load_checkpoint(checkpoint)
    base = ckpt.build_model()
    # a fine-tuned encoder's twin would not match the feature cache site heads are trained from
    model = ServedConceptModel(base, site_feature_encoder(base.encoder) if ckpt.encoder_state is None else None).eval()
    example = torch.rand(2, 1, INPUT_SIZE, INPUT_SIZE)
    with torch.inference_mode():
        traced = torch.jit.trace(model, example, check_trace=False)
    traced = torch.jit.freeze(traced.eval())
    if check:
        probe = torch.rand(5, 1, INPUT_SIZE, INPUT_SIZE)
        with torch.inference_mode():
            want, got = model(probe), traced(probe)
        for w, g in zip(want, got, strict=True):
            if not torch.allclose(w, g, atol=1e-4, rtol=1e-4):
                raise RuntimeError(f"traced model differs from eager by {float((w - g).abs().max()):.2e}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"model_version": ckpt.version, "concepts_version": ckpt.meta.get("concepts_version"), "encoder": ckpt.encoder_name,
            "outputs": SERVED_OUTPUTS, "site_features": model.site_features or ckpt.encoder_name}  # fmt: skip
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")  # per process: two exporters never share a temp file
    torch.jit.save(traced, str(tmp), _extra_files={META_FILE: json.dumps(meta)})
    tmp.replace(out_path)
    return out_path


def exported_version(path: str | Path) -> str | None:
    """The model version recorded in an exported file, or None if unreadable."""
    try:
        extra = {META_FILE: ""}
        with _quiet_jit():
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        meta = json.loads(extra[META_FILE])
        return meta["model_version"] if meta.get("outputs") == SERVED_OUTPUTS else None
    except Exception:  # noqa: BLE001 - any unreadable file means "export again"
        return None


def _set_parameter(config_text: str, key: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')  # protobuf text format string escapes
    block = f'parameters {{ key: "{key}" value {{ string_value: "{escaped}" }} }}'
    # the value is a quoted string that may hold braces (JSON): match the string, not up to a brace
    pattern = re.compile(r'parameters\s*\{\s*key:\s*"' + re.escape(key) + r'"\s*value\s*\{\s*string_value:\s*"(?:[^"\\]|\\.)*"\s*\}\s*\}')
    if pattern.search(config_text):
        return pattern.sub(lambda _: block, config_text)
    return config_text.rstrip() + "\n" + block + "\n"


def prepare_model_repository(
    src: str | Path = REPO_MODELS, dst: str | Path = Path(".radalign/triton_models"), *, checkpoint: str | Path = DEFAULT_CHECKPOINT, gpu: bool = False,
    site_models_dir: str | Path | None = None,
) -> Path:
    """Copy the model repository to `dst` and write the exported model into it; returns `dst`.

    With `site_models_dir`, Triton serves each site's live head from that registry
    (radalign.sites.registry).

    Re-exports only when the checkpoint's version differs from the file already there, so a
    restart of the stack costs nothing. With `gpu`, `config.gpu.pbtxt` replaces `config.pbtxt`."""
    src, dst = Path(src), Path(dst)
    shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    model_dir = dst / MODEL_NAME
    gpu_config = model_dir / "config.gpu.pbtxt"
    config_path = model_dir / "config.pbtxt"
    if gpu:
        shutil.copyfile(gpu_config, config_path)
    gpu_config.unlink(missing_ok=True)  # Triton reads only config.pbtxt; keep the served repo unambiguous
    version = load_checkpoint(checkpoint).version
    target = model_dir / "1" / MODEL_FILE
    if exported_version(target) != version:
        log.info("exporting %s to %s", checkpoint, target)
        export_torchscript(checkpoint, target)
    config = _set_parameter(config_path.read_text(), "model_version", version)
    # Observations the checkpoint learnt (both classes seen in training). The concept stage reports
    # only these: an observation the model never learnt is "not assessed", not "uncertain".
    supported = [o.value for o, ok in zip(OBSERVATIONS, load_checkpoint(checkpoint).head.supported.tolist(), strict=True) if ok]
    config = _set_parameter(config, "supported_observations", "|".join(supported))
    if site_models_dir is not None:
        config = _set_parameter(config, "site_models_dir", str(Path(site_models_dir).resolve()))
    # The validity gate decided on held-out data: which observations the concept stage reports,
    # their operating points and the OOD threshold. Checkpoints without one serve no gate.
    gate = load_checkpoint(checkpoint).gate
    if gate is not None:
        for key, value in gate.triton_parameters().items():
            config = _set_parameter(config, key, value)
    config_path.write_text(config)
    return dst

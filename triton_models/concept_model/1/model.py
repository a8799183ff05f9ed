"""Triton Python-backend model: the exported TorchScript concept model, then each film's site head.

Triton's dynamic batcher hands `execute` several requests; their images are concatenated into one
forward pass of the encoder + generic head (the encoder runs once per film), and each film's
pooled features then go through the head of its site (`site` input) when the site has a live
model in the site registry (radalign.sites.registry), and through its shadow candidate when it
has one. Site heads are small TorchScript files; the registry is re-read when its
`registry.json` changes, so promoting or rolling back a site needs no restart. This file imports
nothing of the project: Triton's container need not have it.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

HEAD_META = "site_head.json"
NO_HEAD = "{}"


class SiteHeads:
    """Live and shadow heads per site, reloaded when a site's registry.json changes."""

    def __init__(self, root: str, logger: object, features: str) -> None:
        self.root = root
        self.logger = logger
        self.features = features  # the encoder features the served model pools: a head trained on others is refused
        self.checked = 0.0
        self.stamps: dict[str, int] = {}
        self.heads: dict[tuple[str, str], tuple[torch.jit.ScriptModule, str]] = {}  # (site, role) -> (module, meta JSON)

    def refresh(self) -> None:
        if not self.root or time.monotonic() - self.checked < 1.0:  # a stat per site at most once a second
            return
        self.checked = time.monotonic()
        try:
            sites = [e.name for e in os.scandir(self.root) if e.is_dir()]
        except OSError:
            return
        for site in sites:
            path = os.path.join(self.root, site, "registry.json")
            try:
                stamp = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if self.stamps.get(site) != stamp:
                self._load(site, path)
                self.stamps[site] = stamp

    def _load(self, site: str, path: str) -> None:
        try:
            with open(path) as fh:
                state = json.load(fh)
            for role in ("live", "shadow"):
                version = state.get(role)
                self.heads.pop((site, role), None)
                if version:
                    extra = {HEAD_META: ""}
                    module = torch.jit.load(os.path.join(self.root, site, "heads", f"{version}.pt"), map_location="cpu", _extra_files=extra)
                    meta = json.loads(extra[HEAD_META])
                    if self.features and meta.get("encoder") != self.features:
                        raise ValueError(f"head {version} reads {meta.get('encoder')} features, the served model gives {self.features}")
                    head = json.dumps({"site": site, "version": version, "gate": meta.get("gate")}, separators=(",", ":"))
                    self.heads[(site, role)] = (module.eval(), head)
            self.logger.log_info(f"concept_model: site {site}: live {state.get('live')}, shadow {state.get('shadow')}")
        except Exception as exc:  # noqa: BLE001 - a broken registry entry must not take the model down: that site serves generic
            self.logger.log_error(f"concept_model: site {site}: registry not loaded ({exc}); the generic model serves it")

    def get(self, site: str, role: str) -> tuple[torch.jit.ScriptModule, str] | None:
        return self.heads.get((site, role))


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        # "0": the CPUs this process may run on (the affinity set, which containers narrow)
        threads = int(params.get("torch_threads") or 0) or len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)  # one forward at a time per instance: no inter-op pool needed
        except RuntimeError:
            pass  # already set in this process
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        path = os.path.join(args["model_repository"], args["model_version"], params.get("model_file") or "concept_model.pt")
        extra = {"meta.json": ""}
        self.model = torch.jit.load(path, map_location=self.device, _extra_files=extra).eval()
        self.logger = pb_utils.Logger
        self.sites = SiteHeads(params.get("site_models_dir", ""), self.logger, json.loads(extra["meta.json"] or "{}").get("site_features", ""))
        self.logger.log_info(f"concept_model: loaded {path} on {self.device}, {threads} torch threads, site models in {self.sites.root or '(none)'}")

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        sites = [_site(pb_utils.get_input_tensor_by_name(r, "site")) for r in requests]
        sizes = [a.shape[0] for a in arrays]
        try:
            batch = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)).to(self.device)
            with torch.inference_mode():
                probs, emb, ood, pooled = self.model(batch)
            probs, emb = probs.float().cpu().numpy(), emb.float().cpu().numpy()
            ood, pooled = ood.float().cpu().numpy().reshape(-1, 1), pooled.float().cpu()
            self.sites.refresh()
            responses, offset = [], 0
            for n, site in zip(sizes, sites):
                rows = slice(offset, offset + n)
                live = self.sites.get(site, "live") if site else None
                shadow = self.sites.get(site, "shadow") if site else None
                p, o, head = (probs[rows], ood[rows], NO_HEAD) if live is None else (*_run(live[0], pooled[rows]), live[1])
                sp, so, shead = (np.zeros_like(probs[rows]), np.zeros_like(ood[rows]), NO_HEAD) if shadow is None else (*_run(shadow[0], pooled[rows]), shadow[1])
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("probabilities", p), pb_utils.Tensor("embedding", emb[rows]), pb_utils.Tensor("ood_score", o),
                    pb_utils.Tensor("head", _strings(head, n)), pb_utils.Tensor("shadow_probabilities", sp),
                    pb_utils.Tensor("shadow_ood_score", so), pb_utils.Tensor("shadow_head", _strings(shead, n)),
                ]))
                offset += n
            return responses
        except Exception as exc:  # noqa: BLE001 - one failed batch answers every request with the error
            error = pb_utils.TritonError(f"concept_model forward failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]

    def finalize(self) -> None:
        self.model = None


def _site(tensor: object) -> str:
    if tensor is None:
        return ""
    value = tensor.as_numpy().reshape(-1)[0]
    return (value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)).strip()


def _run(head: torch.jit.ScriptModule, pooled: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probs, ood = head(pooled)
    return probs.float().numpy(), ood.float().numpy().reshape(-1, 1)


def _strings(value: str, n: int) -> np.ndarray:
    return np.array([[value.encode("utf-8")]] * n, dtype=np.object_)

"""Triton Python-backend model: runs the exported TorchScript concept model with torch.

Triton's dynamic batcher hands `execute` several requests; they are concatenated into one
forward pass and split back, so batching pays off on CPU as well as GPU.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils


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
        self.model = torch.jit.load(path, map_location=self.device).eval()
        self.logger = pb_utils.Logger
        self.logger.log_info(f"concept_model: loaded {path} on {self.device}, {threads} torch threads")

    def execute(self, requests: list) -> list:
        arrays = [pb_utils.get_input_tensor_by_name(r, "image").as_numpy() for r in requests]
        sizes = [a.shape[0] for a in arrays]
        try:
            batch = torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32)).to(self.device)
            with torch.inference_mode():
                probs, emb, ood = self.model(batch)
            probs = probs.float().cpu().numpy()
            emb = emb.float().cpu().numpy()
            ood = ood.float().cpu().numpy().reshape(-1, 1)
        except Exception as exc:  # noqa: BLE001 - one failed batch answers every request with the error
            error = pb_utils.TritonError(f"concept_model forward failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        responses, offset = [], 0
        for n in sizes:
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("probabilities", probs[offset : offset + n]),
                        pb_utils.Tensor("embedding", emb[offset : offset + n]),
                        pb_utils.Tensor("ood_score", ood[offset : offset + n]),
                    ]
                )
            )
            offset += n
        return responses

    def finalize(self) -> None:
        self.model = None

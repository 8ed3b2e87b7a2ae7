"""PyTorch's own deployment formats as backends: a ``.pt2`` ExportedProgram and an
AOTInductor package (``.aoti.pt2``), each a float batch in and float32 logits out."""

from __future__ import annotations

from pathlib import Path

import torch


class ExportedClassifier:
    """A ``.pt2`` ExportedProgram as a classifier: a float batch in, float32 logits out."""

    backend, precision = "pt2", "fp32"

    def __init__(self, path):
        self.path = Path(path)
        self.module = torch.export.load(str(self.path)).module()

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.float().contiguous()).float()


class AotiClassifier:
    """An AOTInductor package as a classifier: a float batch in, float32 logits out."""

    backend, precision = "aoti", "fp32"

    def __init__(self, path):
        from torch._inductor import aoti_load_package

        self.path = Path(path)
        self.runner = aoti_load_package(str(self.path))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.float().contiguous()).float()

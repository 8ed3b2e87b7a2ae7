"""Grad-CAM of a run's model on image files: the heatmap over the picture the network saw,
side by side with it (PNG), and the raw map (``.npy``)."""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..data.names import matches
from ..errors import ConfigError, ImageReadError
from ..io import atomic_write, open_image
from ..predict import Predictor
from .gradcam import check_layer, default_layer, grad_cam

DISPLAY = 224  # small inputs (CIFAR's 32 px) are shown enlarged to at least this size


@dataclass
class Explanation:
    path: str
    class_name: str | None = None
    probability: float | None = None
    layer: str | None = None
    png: Path | None = None
    npy: Path | None = None
    error: str | None = None


def class_index(classes: list[str], name: str | None) -> int | None:
    """The index of a class given by name; a name not in the run's classes names the closest."""
    if name is None:
        return None
    for i, label in enumerate(classes):  # "n03888257 parachute", "n03888257" or "parachute"
        if label == name or matches(label, name):
            return i
    close = difflib.get_close_matches(name, classes, n=1, cutoff=0.0)
    raise ConfigError(f"class {name!r} is not one of this run's {len(classes)} classes"
                      + (f" (closest: {close[0]!r})" if close else ""))


def overlay(image, cam: torch.Tensor, alpha: float = 0.5, colormap: str = "jet"):
    """A PIL RGB image with a [0, 1] heatmap (resized to it) blended over it."""
    import matplotlib
    from PIL import Image

    h, w = image.size[1], image.size[0]
    if cam.shape != (h, w):
        cam = torch.nn.functional.interpolate(cam[None, None].float(), size=(h, w),
                                              mode="bilinear", align_corners=False)[0, 0]
    colours = matplotlib.colormaps[colormap](cam.clamp(0, 1).numpy())[..., :3]
    blend = (1 - alpha) * np.asarray(image, dtype=np.float32) / 255 + alpha * colours
    return Image.fromarray((blend.clip(0, 1) * 255).round().astype(np.uint8), "RGB")


def side_by_side(image, cam: torch.Tensor, alpha: float = 0.5):
    """The picture and its heatmap overlay next to each other, enlarged when tiny."""
    from PIL import Image

    scale = max(1, -(-DISPLAY // max(image.size)))
    size = (image.size[0] * scale, image.size[1] * scale)
    big = image.resize(size, Image.NEAREST) if scale > 1 else image
    heat = overlay(big, cam, alpha)
    sheet = Image.new("RGB", (size[0] * 2 + 8, size[1]), (255, 255, 255))
    sheet.paste(big, (0, 0))
    sheet.paste(heat, (size[0] + 8, 0))
    return sheet


class Explainer:
    """Grad-CAM for one run: ``explain(image)`` gives the map; ``explain_files`` writes them."""

    def __init__(self, run, device: str = "cpu", layer: str | None = None,
                 method: str = "gradcam", predictor: Predictor | None = None,
                 precision: str = "auto"):
        """``predictor``: share an already loaded PyTorch :class:`Predictor` (the service).
        ``precision``: the forward and backward passes under bf16 autocast (``auto``: on a GPU
        and on CPUs with native bf16) or in fp32; the maps are returned in fp32 either way."""
        from ..device import autocast_for

        # the predictor is only asked to crop and normalise: its fp32 engine keeps the model
        self.predictor = predictor or Predictor(run, device=device, precision="fp32")
        self.autocast = autocast_for(self.predictor.device, precision)
        self.classes = self.predictor.classes
        self._layer = layer
        self.method = method
        if predictor is None:
            _ = self.layer  # a bad layer name fails here, before any image is read

    @property
    def model(self):
        """The run's PyTorch model (the service loads it on the first explanation asked for)."""
        return self.predictor.model

    @cached_property
    def layer(self) -> str:
        return check_layer(self.model, self._layer) if self._layer else default_layer(self.model)

    def explain(self, image, class_name: str | None = None, method: str | None = None):
        """(the picture the network saw, its CamResult) for one PIL image."""
        crop = self.predictor.crop(image)
        x = self.predictor.to_tensor(crop).to(self.predictor.device)
        idx = class_index(self.classes, class_name)
        with self.autocast():
            return crop, grad_cam(self.model, x, self.layer, idx, method or self.method)[0]

    def png(self, image, class_name: str | None = None, method: str | None = None) -> bytes:
        """The side-by-side sheet of one PIL image, as PNG bytes."""
        crop, result = self.explain(image, class_name, method)
        buf = io.BytesIO()
        side_by_side(crop, result.normalized()).save(buf, "PNG")
        return buf.getvalue()

    def explain_files(self, paths, out_dir, class_name: str | None = None) -> list[Explanation]:
        class_index(self.classes, class_name)  # a bad class name fails before any work
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        results, taken = [], set()
        for path in paths:
            ex = Explanation(path=str(path))
            results.append(ex)
            try:
                image = open_image(path)
            except ImageReadError as exc:
                ex.error = str(exc)
                continue
            crop, result = self.explain(image, class_name)
            stem, n = Path(path).stem, 1
            while stem in taken:  # two files of one name in different folders
                n += 1
                stem = f"{Path(path).stem}_{n}"
            taken.add(stem)
            name = f"{stem}.{self.method.replace('+', 'p')}"
            ex.png, ex.npy = out_dir / f"{name}.png", out_dir / f"{name}.npy"
            sheet = side_by_side(crop, result.normalized())
            atomic_write(ex.png, lambda tmp: sheet.save(tmp, "PNG"))
            raw = result.cam.numpy().astype(np.float32)
            atomic_write(ex.npy, lambda tmp: np.save(open(tmp, "wb"), raw))
            ex.class_name, ex.probability, ex.layer = (self.classes[result.class_index],
                                                       result.probability, result.layer)
        return results

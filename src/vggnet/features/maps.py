"""Feature maps for learners (a grid of each layer's strongest channels) and pooled embeddings
for retrieval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..device import autocast_for, resolve_precision
from ..errors import ConfigError, ImageReadError
from ..io import open_image
from ..predict import Predictor

TILE = 96


def check_layers(model, layers: list[str]) -> list[str]:
    valid = model.tap_names()
    bad = [n for n in layers if n not in valid]
    if bad:
        import difflib

        close = {n: difflib.get_close_matches(n, valid, n=1) for n in bad}
        hints = ", ".join(f"{n!r}" + (f" (did you mean {c[0]}?)" if c else "")
                          for n, c in close.items())
        raise ConfigError(f"unknown layer(s) {hints}; valid names: {', '.join(valid)}")
    return layers


@torch.inference_mode()
def strongest_channels(model, x: torch.Tensor, layers: list[str], top: int = 8):
    """{layer: (channel indices, their maps)} of the ``top`` channels with the largest mean
    activation for one image (1 x C x H x W)."""
    out = {}
    for name, act in model.extract(x, check_layers(model, layers)).items():
        if act.ndim != 4:
            raise ConfigError(f"{name} is not a feature map (shape {tuple(act.shape)}); choose "
                              "a conv, relu or pool layer")
        strength = act[0].mean((1, 2))
        idx = strength.topk(min(top, act.shape[1])).indices
        out[name] = (idx.tolist(), act[0, idx])
    return out


def feature_grid(image, maps: dict, colormap: str = "viridis"):
    """One row per layer: the picture, then its strongest channels (each min-max scaled)."""
    import matplotlib
    from PIL import Image, ImageDraw

    cmap = matplotlib.colormaps[colormap]
    cols = 1 + max(len(idx) for idx, _ in maps.values())
    label_h = 16
    sheet = Image.new("RGB", (cols * (TILE + 4), len(maps) * (TILE + label_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    picture = image.resize((TILE, TILE), Image.BILINEAR)
    for row, (name, (idx, acts)) in enumerate(maps.items()):
        y = row * (TILE + label_h + 4)
        sheet.paste(picture, (0, y + label_h))
        draw.text((2, y + 2), name, fill="black")
        for col, (c, a) in enumerate(zip(idx, acts), start=1):
            a = F.interpolate(a[None, None].float(), size=(TILE, TILE), mode="nearest")[0, 0]
            a = (a - a.min()) / (a.max() - a.min() + 1e-8)
            tile = Image.fromarray((cmap(a.numpy())[..., :3] * 255).astype(np.uint8), "RGB")
            x = col * (TILE + 4)
            sheet.paste(tile, (x, y + label_h))
            draw.text((x + 2, y + 2), f"ch {c}", fill="black")
    return sheet


class FeatureExtractor:
    """A run's model as a feature network, with the run's own preprocessing, in ``precision``
    (``auto``: bf16 where the device has it natively, as everywhere in vggnet; the maps and
    vectors come back as fp32)."""

    def __init__(self, run, device: str = "cpu", precision: str = "auto"):
        self.predictor = Predictor(run, device=device)
        self.model = self.predictor.model
        self.precision = resolve_precision(self.predictor.device, precision)
        self.autocast = autocast_for(self.predictor.device, self.precision)

    def grid(self, path, layers: list[str], top: int = 8):
        crop = self.predictor.crop(open_image(path))
        x = self.predictor.to_tensor(crop).to(self.predictor.device)
        with self.autocast():
            return feature_grid(crop, strongest_channels(self.model, x, layers, top))

    @torch.inference_mode()
    def embed(self, paths, layer: str, batch_size: int = 32, normalize: bool = True):
        """(N x C float32 array of globally average-pooled ``layer`` outputs, the paths that
        were read, [(path, error)] for the ones that were not)."""
        check_layers(self.model, [layer])
        rows, kept, errors, pending = [], [], [], []

        def flush():
            if pending:
                x = torch.cat([t for _, t in pending]).to(self.predictor.device)
                with self.autocast():
                    act = self.model.extract(x, [layer])[layer]
                v = act.float().mean((2, 3)) if act.ndim == 4 else act.float()
                rows.append(F.normalize(v, dim=1) if normalize else v)
                kept.extend(p for p, _ in pending)
                pending.clear()

        for path in paths:
            try:
                pending.append((str(path), self.predictor.preprocess(open_image(path))))
            except ImageReadError as exc:
                errors.append((str(path), str(exc)))
            if len(pending) >= batch_size:
                flush()
        flush()
        vectors = torch.cat(rows).cpu().numpy() if rows else np.zeros((0, 0), np.float32)
        return vectors.astype(np.float32), kept, errors


def save_embeddings(out: Path, vectors: np.ndarray, paths: list[str]) -> tuple[Path, Path]:
    """``out`` (.npy, one row per image) and ``out`` with .txt: the files, one per line."""
    from ..io import atomic_write

    out = Path(out).with_suffix(".npy")
    listing = out.with_suffix(".txt")
    atomic_write(out, lambda tmp: np.save(open(tmp, "wb"), vectors))
    atomic_write(listing, lambda tmp: tmp.write_text("".join(f"{p}\n" for p in paths)))
    return out, listing

"""The evaluation report of a run: what ``vggnet evaluate`` prints and writes, as a library
function (so the Python API can do everything the command line does)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data.names import readable
from ..device import autocast_for, pick_device, resolve_precision
from ..errors import ConfigError, DataError
from ..io import write_json
from ..run import RunMetadata, load_checkpoint, open_run_data, resolve_checkpoint
from .protocols import PROTOCOLS, evaluate_protocol, evaluate_protocol_folder


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class EvalOptions:
    """How to evaluate: the paper's protocol, its test scales Q (default: the run's), flips,
    translated views, and which images."""
    protocol: str = "single"
    scales: list[int] | None = None
    grid: int = 5
    flip: bool = False
    tta_shift: int = 0
    split: str = "test"
    data: str | None = None          # another data set with the same classes
    data_root: str | None = None
    image_size: int | None = None
    limit: int | None = None
    stream: bool = False
    workers: int = 4
    batch_size: int = 250
    device: str = "auto"
    precision: str = "auto"

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {self.protocol!r}")
        if self.tta_shift < 0 or (self.tta_shift and self.protocol != "single"):
            raise ConfigError(f"--tta-shift {self.tta_shift}: a shift of 0 or more pixels, with "
                              f"the single protocol only (got --protocol {self.protocol})")
        for flag, value in (("--batch-size", self.batch_size), ("--grid", self.grid),
                            ("--limit", self.limit), ("--image-size", self.image_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} must be at least 1, not {value}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be 0 or more, not {self.workers}")
        if self.scales is not None and (not self.scales or min(self.scales) < 1):
            raise ConfigError(f"--scales takes test scales Q of 1 pixel or more (the shorter "
                              f"side the image is rescaled to), not {self.scales}")


def evaluate_run(checkpoint, options: EvalOptions | None = None) -> dict:
    """Evaluate a run (directory or checkpoint file) from its checkpoint alone; returns the
    report (top-1, top-5, loss, per-class accuracy, confusion matrix, what was evaluated)."""
    opts = options or EvalOptions()
    opts.check()
    device = pick_device(opts.device)
    ckpt = resolve_checkpoint(checkpoint)
    model, meta = load_checkpoint(ckpt, device=device)
    pre = meta.preprocessing
    scales = list(opts.scales or [pre.test_scale])
    common = dict(protocol=opts.protocol, scales=scales, crop=pre.input_size, flip=opts.flip,
                  grid=opts.grid, mean=pre.mean, std=pre.std, device=device,
                  autocast=autocast_for(device, opts.precision), shift=opts.tta_shift)
    if opts.stream or (meta.config.get("stream") and not opts.data):
        result, classes = _evaluate_folder(model, meta, opts, common)
    else:
        data = open_run_data(meta, opts.split, n=opts.limit, data=opts.data,
                             data_root=opts.data_root, image_size=opts.image_size)
        result = evaluate_protocol(model, data.images, data.labels, batch_size=opts.batch_size,
                                   **common)
        classes = data.classes
    classes = readable(classes)  # WordNet ids with their names
    return {"checkpoint": str(ckpt), "arch": model.arch, "data": str(opts.data or meta.data_source),
            "split": opts.split, "images": result["n"], "protocol": opts.protocol,
            "scales": scales, "flip": opts.flip, "tta_shift": opts.tta_shift,
            "precision": resolve_precision(device, opts.precision),
            "top1": result["top1"], "top5": result["top5"], "loss": result["loss"],
            "per_class": dict(zip(classes, result["per_class"])),
            "confusion": result["confusion"], "classes": classes}


def _evaluate_folder(model, meta: RunMetadata, opts: EvalOptions, common: dict):
    """An ImageFolder tree too large for memory (ImageNet): image by image, whole images."""
    from ..data.stream import stream_splits

    folder = stream_splits(opts.data or meta.data_source)[0 if opts.split == "train" else 1]
    # the class folders alone: listing every image of ImageNet's val/ twice is slow
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if meta.classes and classes != meta.classes:
        raise DataError(f"the classes of {folder} {classes[:5]}... differ from the "
                        f"checkpoint's {meta.classes[:5]}...")
    result = evaluate_protocol_folder(model, folder, workers=opts.workers, limit=opts.limit,
                                      **common)
    return result, classes


def write_report(report: dict, out: Path) -> tuple[Path, Path]:
    """``evaluation.json`` and ``confusion.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = write_json(out / "evaluation.json", report)
    png = plot_confusion(report["confusion"], report["classes"], out / "confusion.png",
                         title=f"{report['arch']} on {Path(report['data']).name} "
                               f"({report['split']}): top-1 {100 * report['top1']:.2f}%")
    return json_path, png


def format_report(report: dict) -> str:
    """The report as the lines ``vggnet evaluate`` prints."""
    shift = f", shift {report['tta_shift']}" if report["tta_shift"] else ""
    views = (f"{report['protocol']}, Q={','.join(map(str, report['scales']))}"
             f"{', flip' if report['flip'] else ''}{shift}"
             + (f", {report['precision']}" if "precision" in report else ""))
    lines = [f"{report['arch']} on {report['data']} ({report['split']}, {report['images']} "
             f"images, {views}): top-1 {100 * report['top1']:.2f}%  top-5 "
             f"{100 * report['top5']:.2f}%  loss {report['loss']:.4f}"]
    width = max(len(c) for c in report["classes"])
    lines += [f"  {name:<{width}}  {100 * acc:6.2f}%" for name, acc in report["per_class"].items()]
    return "\n".join(lines)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: Path,
                   title: str = "") -> Path:
    import numpy as np

    plt = pyplot()
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(5, min(20, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted"); ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

"""Transfer learning on real photos: from scratch vs frozen backbone vs fine-tuned vs fine-tuned
after unfreezing, on three Imagenette classes held out of the backbone's training.

The backbone is `imagenette_quick` (VGG-11-BN at width 0.5, 96 px crops) trained on the other
seven classes; the new task has 50 training photos per held-out class (gas pump, golf ball,
parachute) and is scored on all their validation photos. Every run is the `vggnet train`
command printed beside its result, so each row can be reproduced by hand.

    python benchmarks/transfer_imagenette.py --data ../shared/data/imagenette-224.tar.gz \\
        [--seeds 0 1 2] [--work /tmp/transfer] [--out benchmarks/results/transfer_imagenette.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HELD_OUT = ("n03425413", "n03445777", "n03888257")  # gas pump, golf ball, parachute
PER_CLASS = 50

# name -> the flags of `vggnet train` beyond --data, --out and --seed
CONDITIONS = {
    "from scratch": ["--config", "finetune", "--model", "vgg11_bn", "--width", "0.5",
                     "--head", "linear", "--image-size", "128", "--scale", "96",
                     "--scale-max", "128", "--crop-size", "96", "--lr", "0.05",
                     "--backbone-lr", "1"],
    "frozen backbone": ["--weights", "{backbone}", "--freeze", "features"],
    "fine-tuned (backbone at lr x0.1)": ["--weights", "{backbone}"],
    "frozen 5 epochs, then fine-tuned": ["--weights", "{backbone}", "--freeze", "features",
                                         "--unfreeze-after", "5"],
}


def split_data(tar: Path, work: Path) -> tuple[Path, Path]:
    """backbone/ (7 classes, all photos) and heldout/ (3 classes: 50 training photos each,
    every validation photo), as ImageFolder trees under ``work``."""
    backbone, heldout = work / "backbone", work / "heldout"
    if (heldout / "val").is_dir():
        return backbone, heldout
    raw = work / "raw"
    with tarfile.open(tar) as t:
        t.extractall(raw, filter="data")
    root = next(raw.glob("*/train")).parent
    for split in ("train", "val"):
        for folder in sorted((root / split).iterdir()):
            if folder.name not in HELD_OUT:
                shutil.copytree(folder, backbone / split / folder.name)
                continue
            files = sorted(folder.iterdir())
            if split == "train":
                files = files[:PER_CLASS]
            (heldout / split / folder.name).mkdir(parents=True)
            for f in files:
                shutil.copy(f, heldout / split / folder.name / f.name)
    shutil.rmtree(raw)
    return backbone, heldout


def vggnet(*args: str) -> list[str]:
    return [sys.executable, "-m", "vggnet", *args]


def train(args: list[str], log: Path) -> float:
    print("  $ vggnet " + " ".join(args[3:]), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        subprocess.run(args, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def best_top1(run: Path) -> float:
    return json.loads((run / "best.json").read_text())["metrics"]["test_top1"]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() \
            else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="imagenette-224.tar.gz")
    ap.add_argument("--work", default="/tmp/vggnet-transfer")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"
                                         / "transfer_imagenette.json"))
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    backbone_data, heldout = split_data(Path(args.data), work)
    backbone = work / "runs" / "backbone"
    if not (backbone / "best.safetensors").is_file():
        seconds = train(vggnet("train", "--config", "imagenette_quick", "--data",
                               str(backbone_data), "--out", str(backbone), "--overwrite",
                               "--progress", "false"), work / "backbone.log")
        print(f"  backbone: {100 * best_top1(backbone):.2f}% on 7 classes, {seconds:.0f} s")
    rows = {}
    for name, flags in CONDITIONS.items():
        flags = [f.replace("{backbone}", str(backbone)) for f in flags]
        results = []
        for seed in args.seeds:
            out = work / "runs" / f"{name.split()[0]}-{len(rows)}-{seed}"
            cmd = vggnet("train", "--data", str(heldout), *flags, "--seed", str(seed),
                         "--out", str(out), "--overwrite", "--progress", "false")
            seconds = train(cmd, out.with_suffix(".log"))
            results.append({"seed": seed, "top1": best_top1(out), "seconds": round(seconds)})
            print(f"  {name}, seed {seed}: {100 * results[-1]['top1']:.2f}%", flush=True)
        tops = [r["top1"] for r in results]
        rows[name] = {"command": "vggnet train --data heldout/ " + " ".join(
                          f.replace(str(backbone), "runs/backbone") for f in flags),
                      "runs": results, "mean_top1": round(statistics.mean(tops), 4),
                      "min_top1": min(tops), "max_top1": max(tops)}
    report = {"backbone": {"recipe": "imagenette_quick", "classes": 7,
                           "top1": best_top1(backbone)},
              "task": {"held_out_classes": list(HELD_OUT), "train_per_class": PER_CLASS,
                       "val_images": sum(1 for _ in (heldout / "val").rglob("*.*"))},
              "conditions": rows,
              "hardware": f"{cpu_name()}, python {platform.python_version()}"}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

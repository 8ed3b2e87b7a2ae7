"""The fine-tune guide's commands on real photos of mixed sizes, end to end, with the result
file and pictures the guide shows.

The photos: Imagenette's three classes held out of the backbone's training (gas pump, golf
ball, parachute; 50 training photos each, all their validation photos), each photo cut to
one of several sizes and shapes (320x240 to 640x427, portrait and landscape) and saved as a
phone or a scanner would: mostly JPEG, some greyscale PNG, some CMYK JPEG, some with an
EXIF rotation, plus two files that are not images. The backbone stands in for the ImageNet
weights, which cannot be downloaded offline: `imagenette_quick` trained on the other seven
classes (as benchmarks/transfer_imagenette.py does). Then the guide's commands as written,
with `--weights runs/backbone` where the guide has `--weights imagenet`: train (head first,
then all), evaluate, export for OpenVINO with int8, predict.

    python benchmarks/finetune_guide.py --data ../shared/data/imagenette-224.tar.gz \\
        [--work /tmp/vggnet-finetune] [--out benchmarks/results/finetune_guide_TAG.json]

Steps whose outputs exist in --work are not run again. Writes the JSON and copies the run's
confusion matrix and curves to docs/finetune_confusion.png and docs/finetune_curves.png.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = {"n03425413": "gas_pump", "n03445777": "golf_ball", "n03888257": "parachute"}
SIZES = [(320, 240), (240, 320), (500, 375), (375, 500), (256, 256), (640, 427), (300, 200)]
GUIDE_TRAIN = ["--freeze", "features", "--unfreeze-after", "5"]


def mixed_photos(heldout: Path, out: Path) -> Path:
    """The held-out photos as a practitioner's folder: mixed sizes, modes and formats."""
    from PIL import Image, ImageOps

    if (out / "val").is_dir():
        return out
    rng = random.Random(0)
    for split in ("train", "val"):
        for wnid, name in NAMES.items():
            folder = out / split / name
            folder.mkdir(parents=True)
            for path in sorted((heldout / split / wnid).iterdir()):
                im = ImageOps.fit(Image.open(path).convert("RGB"), rng.choice(SIZES))
                kind = rng.random()
                if kind < 0.05:
                    im.convert("L").save(folder / f"{path.stem}.png")
                elif kind < 0.10:
                    im.convert("CMYK").save(folder / f"{path.stem}.jpg", quality=90)
                elif kind < 0.15:  # stored on its side, with the tag that turns it upright
                    turned = im.rotate(90, expand=True)
                    exif = turned.getexif()
                    exif[0x0112] = 8
                    turned.save(folder / f"{path.stem}.jpg", exif=exif, quality=90)
                else:
                    im.save(folder / f"{path.stem}.jpg", quality=90)
    (out / "train" / "gas_pump" / "Thumbs.db").write_bytes(b"\0" * 100)
    (out / "train" / "parachute" / "notes.txt").write_text("camera settings")
    return out


def vggnet(work: Path, *args: str, log: str) -> float:
    print("  $ vggnet " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    with open(work / log, "w") as f:
        subprocess.run([sys.executable, "-m", "vggnet", *args], cwd=work, check=True,
                       stdout=f, stderr=subprocess.STDOUT)
    return time.perf_counter() - t0


def main() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from transfer_imagenette import split_data

    from vggnet.bench import environment

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="imagenette-224.tar.gz")
    ap.add_argument("--work", default="/tmp/vggnet-finetune")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    backbone_data, heldout = split_data(Path(args.data), work)
    mixed_photos(heldout, work / "photos")
    if not (work / "runs/backbone/best.safetensors").is_file():
        vggnet(work, "train", "--config", "imagenette_quick", "--data", str(backbone_data),
               "--out", "runs/backbone", "--progress", "false", log="backbone.log")
    run = work / "runs/mixed"
    seconds = {}
    if not (run / "best.safetensors").is_file():
        seconds["train"] = vggnet(work, "train", "--data", "photos/", "--weights",
                                  "runs/backbone", *GUIDE_TRAIN, "--out", "runs/mixed",
                                  "--progress", "false", log="mixed_train.log")
    seconds["evaluate"] = vggnet(work, "evaluate", "runs/mixed", log="mixed_evaluate.txt")
    seconds["export"] = vggnet(work, "export", "runs/mixed", "--format", "openvino", "--int8",
                               log="mixed_export.txt")
    seconds["predict"] = vggnet(work, "predict", "runs/mixed", "photos/val/parachute",
                                "--top-k", "3", log="mixed_predict.txt")
    evaluation = json.loads((run / "evaluation.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
              if line.strip()]
    seconds["train_epochs"] = sum(e["train_seconds"] for e in epochs)
    seconds["train_checks"] = sum(e["eval_seconds"] for e in epochs)
    backbone = json.loads((work / "runs/backbone/best.json").read_text())
    report = {
        "command": "python benchmarks/finetune_guide.py --data imagenette-224.tar.gz",
        "guide_commands": [
            "vggnet train --data photos/ --weights runs/backbone " + " ".join(GUIDE_TRAIN)
            + " --out runs/mixed", "vggnet evaluate runs/mixed",
            "vggnet export runs/mixed --format openvino --int8",
            "vggnet predict runs/mixed photos/val/parachute --top-k 3"],
        "backbone": {"recipe": "imagenette_quick", "classes": 7,
                     "top1": backbone["metrics"]["test_top1"]},
        "photos": {"train_per_class": 50, "sizes": [f"{w}x{h}" for w, h in SIZES],
                   "val_images": evaluation["images"]},
        "train_log_head": (work / "mixed_train.log").read_text().splitlines()[:6],
        "evaluate_output": (work / "mixed_evaluate.txt").read_text().splitlines(),
        "export_output": (work / "mixed_export.txt").read_text().splitlines(),
        "top1": evaluation["top1"], "per_class": evaluation["per_class"],
        "confusion": evaluation["confusion"], "seconds": {k: round(v, 1) for k, v in
                                                          seconds.items()},
        "environment": environment(),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    shutil.copy(run / "confusion.png", ROOT / "docs" / "finetune_confusion.png")
    shutil.copy(run / "curves.png", ROOT / "docs" / "finetune_curves.png")
    print(json.dumps({k: report[k] for k in ("top1", "per_class", "seconds")}, indent=1))


if __name__ == "__main__":
    main()

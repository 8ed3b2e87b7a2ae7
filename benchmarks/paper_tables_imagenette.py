"""The paper's Tables 3, 4 and 5 in miniature, on real photographs (Imagenette).

Nets A, B and D (VGG-11, -13, -16; with batch norm and a quarter of the channels so that they
train on two CPU cores) are trained at fixed training scales S and at a jittered S, and each
is tested with the paper's protocols: a centre crop at one test scale Q, dense evaluation at
one Q, then over several Q: dense, multi-crop, and dense + multi-crop. Last, net D at jittered
S initialised from net A (the paper's Section 3.1) against D from scratch.

Everything is the paper's setting divided by four: 224 px crops -> 56, S = 256 / 384 -> 64 /
96, S in [256, 512] -> [64, 128]; test Q = S for fixed S, {S - 32, S, S + 32} / 4 -> {56, 64,
72} and {88, 96, 104}; Q = {256, 384, 512} / 4 -> {64, 96, 128} for jittered S. The photos are
decoded once with their shorter side at 128 px (the largest scale used).

    python benchmarks/paper_tables_imagenette.py --epochs 6 --limit 1000

Writes benchmarks/results/paper_tables_imagenette.{md,json}; the runs go to
runs/paper_tables_imagenette/ and are reused when finished (delete them to start again).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from vggnet.bench import environment
from vggnet.data import load_splits
from vggnet.evaluation.protocols import evaluate_protocol
from vggnet.run import load_checkpoint
from vggnet.training.config import resolve
from vggnet.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
NETS = {"A": "vgg11_bn", "B": "vgg13_bn", "D": "vgg16_bn"}
CROP, DECODE = 56, 128
SCALES = [("S=64", 64, None), ("S=96", 96, None), ("S∈[64,128]", 64, 128)]


def run_dir(args, net: str, label: str, tag: str = "") -> Path:
    safe = label.replace("∈", "in").replace("[", "").replace("]", "").replace(",", "-")
    return Path(args.runs) / f"{net}_{safe}{tag}"


def train_once(args, net: str, s_min: int, s_max: int | None, out: Path, init_from=None):
    """One run of the recipe (reused when a finished run is already there)."""
    done = out / "last.json"
    if done.is_file() and json.loads(done.read_text()).get("epoch", 0) >= args.epochs:
        return
    overrides = {"data": args.data, "image_size": DECODE, "model": NETS[net], "width": 0.25,
                 "scale": s_min, "scale_max": s_max, "crop_size": CROP, "epochs": args.epochs,
                 "batch_size": 128, "lr": 0.08, "tta": False, "progress": False,
                 "out": str(out), "overwrite": True, "init_from": init_from,
                 "seed": args.seed, "test_subset": args.limit}  # per-epoch test: the same subset
    train(resolve("imagenette_quick", overrides))


def test_scales(s_min: int, s_max: int | None) -> tuple[int, list[int]]:
    """The paper's single Q and its multi-scale Qs, divided by four."""
    if s_max is None:
        return s_min, [q for q in (s_min - 8, s_min, s_min + 8) if q >= CROP]
    return (s_min + s_max) // 2, [s_min, (s_min + s_max) // 2, s_max]


def evaluate_row(args, test, run: Path, s_min: int, s_max: int | None) -> dict:
    model, meta = load_checkpoint(run, which="last")
    pre = meta.preprocessing
    q_single, q_multi = test_scales(s_min, s_max)

    def err(protocol, scales, flip=True):
        r = evaluate_protocol(model, test.images, test.labels, protocol=protocol,
                              scales=scales, crop=CROP, flip=flip, grid=args.grid,
                              mean=pre.mean, std=pre.std, batch_size=250)
        return [round(100 * (1 - r["top1"]), 2), round(100 * (1 - r["top5"]), 2)]

    return {"single_Q": q_single, "single": err("single", [q_single], flip=False),
            "dense_single": err("dense", [q_single], flip=False),
            "multi_Q": q_multi, "dense_multi": err("dense", q_multi),
            "multicrop_multi": err("multicrop", q_multi),
            "dense+multicrop_multi": err("dense+multicrop", q_multi)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" /
                                          "imagenette-224.tar.gz"))
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--nets", default="A,B,D")
    ap.add_argument("--grid", type=int, default=3, help="multi-crop grid per scale (paper: 5)")
    ap.add_argument("--limit", type=int, help="val images (class-stratified; default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "paper_tables_imagenette"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    _, test = load_splits(args.data, image_size=DECODE)
    test = test.subset(args.limit)
    rows, t0 = [], time.time()
    earlier = _earlier_rows(args, len(test))
    plan = [(net, label, s_min, s_max, None) for net in args.nets.split(",")
            for label, s_min, s_max in SCALES]
    if {"A", "D"} <= set(args.nets.split(",")):  # Section 3.1: D from A, jittered S
        plan.append(("D", SCALES[2][0], 64, 128, run_dir(args, "A", SCALES[0][0])))
    for net, label, s_min, s_max, init in plan:
        run = run_dir(args, net, label, "_from_A" if init else "")
        row = {"net": net + (" (init from A)" if init else ""), "train_scale": label,
               "epochs": args.epochs, "val_images": len(test), "grid": args.grid}
        cached = run / "protocols.json"  # a finished row is not evaluated again
        if (row["net"], label) in earlier and not cached.is_file():
            row = earlier[row["net"], label]  # measured before, its run since deleted
        elif cached.is_file() and json.loads(cached.read_text()).get("val_images") == len(test) \
                and json.loads(cached.read_text()).get("grid") == args.grid:
            row = json.loads(cached.read_text())
        else:
            if init and not (Path(init) / "last.json").is_file():  # A's run is needed again
                train_once(args, "A", 64, None, Path(init))
            train_once(args, net, s_min, s_max, run, init_from=str(init) if init else None)
            row.update(evaluate_row(args, test, run, s_min, s_max))
            env = environment()
            row["machine"] = f"{env['cpu']} ({env.get('cpu_capability')})"
            cached.write_text(json.dumps(row, ensure_ascii=False, indent=2) + "\n")
        rows.append(row)
        print(json.dumps(row, ensure_ascii=False), flush=True)
        # after each row, with the earlier rows not reached yet: a stop loses none of them
        done = {(r["net"], r["train_scale"]) for r in rows}
        write(args, rows + [r for k, r in earlier.items() if k not in done], len(test),
              time.time() - t0)


def _earlier_rows(args, n_test: int) -> dict:
    """Rows already in the results file with the same epochs, photos and grid: kept, not run
    again (delete the file, or the row from it, to measure one afresh)."""
    f = Path(args.out) / "paper_tables_imagenette.json"
    if not f.is_file():
        return {}
    old = json.loads(f.read_text())
    machine = f"{old['environment']['cpu']} ({old['environment'].get('cpu_capability')})"
    return {(r["net"], r["train_scale"]): {"machine": machine, **r} for r in old["rows"]
            if (r["epochs"], r["val_images"], r["grid"]) == (args.epochs, n_test, args.grid)}


def write(args, rows, n_test: int, seconds: float) -> None:
    env = environment()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "paper_tables_imagenette.json").write_text(json.dumps(
        {"environment": env, "epochs": args.epochs, "grid": args.grid, "val_images": n_test,
         "minutes": round(seconds / 60, 1), "rows": rows}, indent=2, ensure_ascii=False) + "\n")
    f = lambda e: f"{e[0]:.1f} / {e[1]:.1f}"  # noqa: E731
    machines = sorted({r.get("machine", "") for r in rows})
    tag = {m: "" if len(machines) < 2 else f" ({chr(ord('a') + i)})" for i, m in enumerate(machines)}
    lines = ["| net | train S | Q | centre crop | dense | Q (multi) | dense | "
             f"{args.grid}x{args.grid} multi-crop | dense + multi-crop |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['net']}{tag[r.get('machine', '')]} | {r['train_scale']} | "
                     f"{r['single_Q']} | {f(r['single'])} | "
                     f"{f(r['dense_single'])} | {', '.join(map(str, r['multi_Q']))} | "
                     f"{f(r['dense_multi'])} | {f(r['multicrop_multi'])} | "
                     f"{f(r['dense+multicrop_multi'])} |")
    where = (f"{env.get('cpu', '')}, {env.get('torch_threads', '')} threads" if len(machines) < 2
             else "rows measured on " + "; ".join(f"{tag[m].strip()} {m}" for m in machines))
    note = (f"\nTop-1 / top-5 error (%) on {n_test} Imagenette val photos (class-stratified), "
            f"one run per row, {args.epochs} epochs each; nets with batch norm at width 0.25, "
            "linear head (dense: the whole rescaled image through the convolutions, then "
            "global average pooling). Single-Q columns: no flip; multi-Q columns average the "
            f"softmax over scales and horizontal flips ({args.grid}x{args.grid} crops x 2 "
            f"flips per scale); fp32. {where}; torch {env.get('torch', '')}; the last "
            f"invocation of the script took {seconds / 60:.0f} minutes.\n")
    (out / "paper_tables_imagenette.md").write_text("\n".join(lines) + "\n" + note)


if __name__ == "__main__":
    main()

"""Sections of benchmarks/RESULTS.md for VGG as a feature network (Grad-CAM, style transfer)
and for the Imagenette recipes and tables."""

from __future__ import annotations

from pathlib import Path

from report_common import _goal, _hardware


def gradcam_section(r: dict | None) -> list[str]:
    out = ["## Grad-CAM speed (`benchmarks/gradcam_speed.py`)", "", "```bash",
           "python benchmarks/gradcam_speed.py --out benchmarks/results/gradcam_speed.json",
           "```", ""]
    if r is None:
        return out + ["Not run yet."]
    ok = r["ratio"] <= 1.3
    return out + [
        _hardware(r["environment"]) + f" {r['model']}, one {r['size']}x{r['size']} image, "
        f"map at {r['layer']}; median of {r['repeats']} interleaved calls after a warm-up "
        "(range in brackets). Baseline: one forward pass with autograd plus the backward "
        "pass back to that layer.", "",
        "| | ms | ratio |", "|---|---|---|",
        f"| forward + backward to {r['layer']} | {r['baseline_ms']} "
        f"{r['range_ms']['forward + backward to the layer']} | 1.00x |",
        f"| vggnet `grad_cam` | {r['gradcam_ms']} {r['range_ms']['vggnet grad_cam']} | "
        f"{r['ratio']:.2f}x ({'meets' if ok else 'misses'} the goal <= 1.3x) |"]


STYLIZE_RUNS = (  # file, command line (the AVX2 machine's first two; the rest AVX-512/AMX)
    ("stylize_speed.json", "--steps 100 --repeats 3"),
    ("stylize_speed_256.json", "--size 224 --steps 20 --repeats 2"),
    ("stylize_speed_224_fp32.json", "--size 224 --steps 20 --repeats 2"),
    ("stylize_speed_224_bf16.json", "--size 224 --steps 20 --repeats 2 --precision bf16"),
    ("stylize_speed_128_bf16.json", "--steps 100 --repeats 3 --precision bf16"),
    ("stylize_speed_224_adam_bf16.json", "--size 224 --steps 100 --repeats 2 --optimizer adam "
     "--lr 0.02 --precision bf16"),
    ("stylize_speed_224_adam_fp32.json", "--size 224 --steps 100 --repeats 2 --optimizer adam "
     "--lr 0.02"),
    ("stylize_speed_224_adam_bf16_fp32steps.json", "--size 224 --steps 100 --repeats 2 "
     "--optimizer adam --lr 0.02 --precision bf16 --fp32-steps 10"),
)


def stylize_section(rows: list[dict]) -> list[str]:
    out = ["## Style transfer per step (`benchmarks/stylize_speed.py`)", "", "```bash"]
    out += [f"python benchmarks/stylize_speed.py {args} --out benchmarks/results/{file}"
            for file, args in STYLIZE_RUNS] + ["```", ""]
    if not rows:
        return out + ["Not run yet."]
    out += ["Baseline: the PyTorch tutorial's way (VGG-19 copied into an `nn.Sequential` with "
            "loss modules, out-of-place ReLUs, trimmed after the last loss), fp32, same "
            "weights, images (an Imagenette church and parachute), losses, max pooling and "
            "optimizer; median seconds per evaluation over interleaved repeats, model "
            "building and targets included. Machines: " + "; ".join(sorted(
                {f"{r['environment']['cpu']} ({r['environment'].get('cpu_capability')}), "
                 f"{r['environment']['cores']} cores, torch {r['environment']['torch']}"
                 for r in rows})) + ".", "",
            "| CPU | size | optimizer | steps | vggnet precision | tutorial s/step | "
            "vggnet s/step | speed-up | loss at start | final loss, tutorial / vggnet | "
            "both results by the tutorial's fp32 loss |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["seconds_per_step"]
        out.append(f"| {r['environment'].get('cpu_capability')} | {r['size'][0]}x{r['size'][1]} | "
                   f"{r.get('optimizer', 'lbfgs')} | {r['steps']} | {r['precision']}"
                   f"{_fp32_steps(r)} | "
                   f"{t['tutorial']} | {t['vggnet']} | "
                   f"{_goal(r['speedup'], '>= 2x', r['speedup'] >= 2)} | {r['start_loss']} | "
                   f"{r['final_loss']['tutorial']} / {r['final_loss']['vggnet']} "
                   f"({100 * r['loss_difference']:.1f}% apart) | {_yardstick(r)} |")
    return out + ["", STYLIZE_NOTE]


def _fp32_steps(r: dict) -> str:
    return f" (last {r['fp32_steps']} in fp32)" if r.get("fp32_steps") else ""


def _yardstick(r: dict) -> str:
    """Both results scored by one fp32 loss (files from before it was measured: "-")."""
    y = r.get("final_loss_fp32_yardstick")
    if not y:
        return "-"
    return (f"{y['tutorial']} / {y['vggnet']} "
            f"({100 * r['loss_difference_fp32_yardstick']:.2f}% apart)")


STYLIZE_NOTE = (
    "The work per evaluation is the same in both (13 convolutions forward and back, the "
    "layers up to relu5_1); convolutions are about 80% of it (profiled). In fp32 vggnet "
    "gains only the Gram matrix's backward (one product instead of autograd's two and a "
    "feature-sized add) and the tutorial's repeated partial forwards while building its "
    "model: 1.01-1.03x, with losses equal to the last digit (same kernels, NCHW: "
    "channels-last measured 8% slower in fp32 on the AVX-512 CPU and no faster on the AVX2 "
    "one). The lever is bf16 (`--precision bf16`: autocast, channels-last, Gram matrices and "
    "losses in fp32) where it is native (AVX512-BF16/AMX CPUs, GPUs): 2.0x at 128 px and "
    "2.7-2.9x at 224 px on the AMX CPU, meeting the 2x goal per step. Plain bf16's loss is "
    "not the fp32 loss to 1%: under Adam, whose path is smooth, its result scores 1.1% above "
    "the tutorial's by the tutorial's fp32 loss after 100 steps; with the last 10 steps in "
    "fp32 (`--fp32-steps 10`) it is 0.53% apart at 2.34x the speed, meeting both goals. "
    "Under L-BFGS, which amplifies any rounding difference (its curvature pairs "
    "come from differences of gradients), the bf16 and fp32 paths part within 20 "
    "evaluations and the last losses differ by tens of per cent either way, as in the table; "
    "stylize returns the lowest-loss image seen, which guards against a late bad step. In "
    "fp32 the 1% goal holds (0.0% apart in these rows, and after 8 evaluations in "
    "tests/test_style.py). The AVX2 rows (first two) are from an earlier version, before "
    "the Gram backward and NCHW in fp32. Random weights: style weight 1e9 and content "
    "weight 1e3, since at the tutorial's 1e6 and 1 a random net's small features leave "
    "L-BFGS's curvature test unmet and the image unchanged.")


IMAGENETTE_RUNS = (  # result file, recipe, dense scales, what it is
    ("imagenette_quick.json", "imagenette_quick", "96 112 128",
     "the recipe as shipped, trained and densely evaluated from a fresh clone with the "
     "commands above; the dense + multi-crop figure is from the working-tree run's weights, "
     "which are bit-identical"),
    ("imagenette_vgg16_bn.json", "imagenette_vgg16_bn", "128 160 192",
     "the recipe as shipped, trained and densely evaluated from a fresh clone with the "
     "commands above; its dense + multi-crop figure uses a 3x3 grid"),
    ("imagenette_vgg16_bn_48ep.json", "imagenette_vgg16_bn", "128 160 192",
     "the previous version of the recipe, without mixup, 48 epochs, the per-epoch check with "
     "flips (--mixup 0 --epochs 48 --tta true), from a fresh clone"),
    ("imagenette_vgg16_bn_32ep.json", "imagenette_vgg16_bn", "128 160 192",
     "an earlier version of the recipe, without cutout or mixup and with 32 epochs (--cutout 0 "
     "--mixup 0 --epochs 32 --tta true), from a fresh clone; its dense + multi-crop figure uses a 3x3 grid"),
    ("imagenette_vgg16_bn_112px.json", "imagenette_vgg16_bn", "112 140 168",
     "an earlier version of the recipe: 112 px crops, S in [112, 168], batch 128, lr 0.08, "
     "30 epochs, no cutout (--cutout 0 --mixup 0 --tta true --image-size 168 --scale 112 --scale-max 168 --crop-size 112 --batch-size 128 "
     "--lr 0.08 --epochs 30)"),
    ("imagenette_quick_second_run.json", "imagenette_quick", "96 112 128",
     "the recipe as shipped, run first from the working tree (--out runs/inq_bs64e20): the "
     "same seed gave bit-identical weights, so it is a reproduction, not a second sample"),
    ("imagenette_quick_seed1.json", "imagenette_quick", "96 112 128",
     "the recipe as shipped with --seed 1 --out runs/inq_seed1, an independent sample; the "
     "machine ran about 20% slower that hour"),
    ("imagenette_quick_cutmix.json", "imagenette_quick", "96 112 128",
     "an experiment: CutMix, --cutmix 1.0 --out runs/inq_cutmix (then evaluate --protocol dense "
     "as above)"),
    ("imagenette_quick_batch64_17ep.json", "imagenette_quick", "96 112 128",
     "an experiment: --batch-size 64 --lr 0.05 --epochs 17 --out runs/inq_bs64; not evaluated "
     "further"),
    ("imagenette_quick_batch128.json", "imagenette_quick", "96 112 128",
     "the previous version of the recipe: batch 128, lr 0.08, 16 epochs"),
    ("imagenette_quick_64px_avx2.json", "imagenette_quick", "64 72 80",
     "an earlier version of the recipe: 64 px crops, S in [64, 80], batch 128, fp32"),
    ("imagenette_quick_progressive.json", "imagenette_quick", "112 128 144",
     "an experiment: progressive resizing, crops 64 -> 112 px (--precision bf16 --batch-size 128 "
     "--lr 0.08 --epochs 16 --crop-start 64 --crop-size 112 --scale 112 --scale-max 144 "
     "--image-size 144 --test-subset 1000 --out runs/inq_prog; then evaluate --protocol dense "
     "--scales 112 128 144 --flip)"),
)


def _recipe_result(r: dict, name: str, what: str) -> str:
    evals = "; ".join(f"{e['protocol']} Q={','.join(map(str, e['scales']))}"
                      f"{' + flips' if e['flip'] else ''} on {e['images']} photos: top-1 "
                      f"{100 * e['top1']:.2f}%, top-5 {100 * e['top5']:.2f}%"
                      for e in r["evaluations"]) or "No evaluation after training yet"
    precision = r["recipe"].get("precision", "?")
    checked = r["recipe"].get("test_subset") or r["data"]["test_images"]
    return (f"`{name}` ({what}; {precision}), {_hardware(r['environment'])} CPU capability: "
            f"{r['environment'].get('cpu_capability')}. {r['epochs']} epochs, "
            f"{r['train_minutes']} min of training plus {r['eval_minutes']} min of per-epoch "
            f"evaluation; best per-epoch top-1 {100 * r['best_top1']:.2f}% (on {checked} val photos). {evals}. Top-1 per "
            f"epoch: {', '.join(f'{100 * v:.1f}' for v in r['top1_per_epoch'])}.")


def imagenette_section(results: dict[str, dict], tables: Path) -> list[str]:
    out = ["## Imagenette at ImageNet-like resolution", "", "```bash"]
    for file, name, scales, _ in IMAGENETTE_RUNS[:2]:
        multicrop = any(e["protocol"] == "dense+multicrop"
                        for e in results.get(file, {}).get("evaluations", ()))
        out += [f"vggnet train --config {name} --data ../shared/data/imagenette-224.tar.gz "
                "--precision bf16",
                f"vggnet evaluate runs/{name} --protocol dense --scales {scales} --flip "
                f"--precision bf16 --out runs/{name}/dense"]
        out += [f"vggnet evaluate runs/{name} --protocol dense+multicrop --scales {scales} "
                f"--grid 3 --flip --precision bf16 --out runs/{name}/dmc"] if multicrop else []
        out += [f"python benchmarks/recipe_result.py runs/{name} runs/{name}/dense"
                f"{f' runs/{name}/dmc' if multicrop else ''} --out benchmarks/results/{file}"]
    out += ["python benchmarks/plot_imagenette_curves.py --out docs/imagenette_vgg16_bn_curves.png",
            "```", "",
            "![imagenette_vgg16_bn versions, top-1 per epoch](../docs/imagenette_vgg16_bn_curves.png)",
            ""]
    for file, name, _, what in IMAGENETTE_RUNS:
        out += [_recipe_result(results[file], name, what) if file in results
                else f"`{name}`: not run yet.", ""]
    out += ["### The paper's Tables 3-5 in miniature", "", "```bash",
            "python benchmarks/paper_tables_imagenette.py --epochs 6 --limit 1000", "```", ""]
    return out + [tables.read_text().strip() if tables.is_file() else "Not run yet."]

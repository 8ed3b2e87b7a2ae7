"""Write benchmarks/RESULTS.md from the JSON files the benchmark scripts leave in results/.

    python benchmarks/report.py

Only measured figures appear; a benchmark that has not been run says so.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path (tests)

from report_common import HERE, RESULTS, _goal, _hardware, _load  # noqa: E402
from report_features import (IMAGENETTE_RUNS, STYLIZE_RUNS, gradcam_section,  # noqa: E402
                             imagenette_section, stylize_section)
from report_transfer import transfer_section  # noqa: E402

from vggnet.models.winograd import AUTO_MAX_PIXELS  # noqa: E402


SERVE_LOADS = [  # (results file, title, note)
    ("serve_load_quick.json", "The quick CIFAR-10 run (VGG-11-BN, width 0.5, 2.3 M parameters)",
     "In PyTorch this model takes about 1.5 ms for one image and 0.5 ms per image in a batch of "
     "32 here; its int8 ONNX Runtime copy, about 1 ms for one image. One HTTP request costs a "
     "few ms of Python in the server and the client, which share the two cores, so the "
     "requests, not the model, bound the rate near 400 requests/s: batching saves the "
     "PyTorch model's share (2.8x) but has nothing left to save for int8. The price of "
     "waiting up to 5 ms for a batch to fill shows at concurrency 1 (79 against 127 "
     "requests/s); `--max-wait-ms 0` batches only what queued while the model was busy: in "
     "one run of `--max-wait-ms 0 --concurrency 1 32` it gave 137 and 377 requests/s with "
     "PyTorch, 376 and 442 with int8."),
    ("serve_load_vgg16_bn.json", "VGG-16-BN at CIFAR-10 size (15 M parameters)",
     "Served from `runs/cifar10_vgg16_bn_load`: `vggnet train --config cifar10_vgg16_bn "
     "--epochs 1 --train-subset 2048 --test-subset 1000 --precision fp32`, a run trained just "
     "enough to have real run metadata; its accuracy is meaningless (its near-constant "
     "logits also make int8's top-1 agreement meaningless), its speed is what a trained "
     "VGG-16-BN's would be. Here the model, not the request, dominates: batching gives 2.9x "
     "in PyTorch and 1.96x in int8."),
]


def _range(row: dict, name: str) -> str:
    r = row.get("range_images_per_s", {}).get(name)
    return f" [{r[0]}-{r[1]}]" if r else ""


def training_rows(t: dict) -> list[str]:
    """The training-throughput table: the tutorial loop against vggnet's engine."""
    out = [f"{t['model']}, batch {t['batch']}, {t['steps']} timed steps after warm-up, "
           f"median of {t.get('repeats', 1)} interleaved repeats (range in brackets). "
           f"Baseline: {t['baseline']}.", "",
           "| | images/s | ratio to baseline |", "|---|---|---|",
           f"| baseline (tutorial loop) | {t['baseline_images_per_s']}{_range(t, 'baseline')} | 1.00x |",
           f"| vggnet engine, fp32 | {t['vggnet_fp32_images_per_s']}{_range(t, 'fp32')} | {t['ratio_fp32']:.2f}x |"]
    if "ratio_bf16_direct" in t:
        out.append(f"| vggnet engine, bf16 autocast, direct convolutions only (`--conv-algorithm direct`) | "
                   f"{t['vggnet_bf16_direct_images_per_s']}{_range(t, 'bf16_direct')} | {t['ratio_bf16_direct']:.2f}x |")
    if "ratio_bf16" in t:
        side = math.isqrt(t.get("winograd_max_pixels", 64))  # files before it was recorded: 64
        label = (f"vggnet engine, bf16 autocast, Winograd F(2x2,3x3) on maps <= {side}x{side} "
                 "with >= 256 channels (the default)"
                 if "ratio_bf16_direct" in t else "vggnet engine, bf16 autocast")
        out.append(f"| {label} | {t['vggnet_bf16_images_per_s']}{_range(t, 'bf16')} | "
                   f"{_goal(t['ratio_bf16'], '>= 2x', t['ratio_bf16'] >= 2)} |")
    for px, r in t.get("winograd_rules", {}).items():  # `--max-pixels`: another rule, same run
        side = math.isqrt(int(px))
        out.append(f"| the same with Winograd on maps <= {side}x{side} instead (`--max-pixels "
                   f"{px}`, for comparison) | {r['images_per_s']}"
                   f"{_range(t, f'bf16_winograd_{px}px')} | {r['ratio']:.2f}x |")
    return out


def training_loop_section(run: dict | None) -> list[str]:
    """The training benchmark re-run alone, timing training's own train_one_epoch."""
    out = ["## Training throughput of the real loop (`benchmarks/training_loop.py`)", "",
           "```bash", "python benchmarks/training_loop.py --data-root ../shared/data \\",
           "    --out benchmarks/results/training_loop.json", "```", ""]
    if run is None:
        return out + ["Not run yet."]
    env = run["environment"]
    return out + ["Since the redesign (issue 13) the engine's figure is the time of "
                  "`vggnet.training.loop.train_one_epoch`, the function `vggnet train` runs, "
                  "not of a copy of its step. " + _hardware(env) + " The CPU's capability "
                  f"as torch sees it: {env.get('cpu_capability', 'not recorded')}; without "
                  "native bf16 the bf16 rows are not measured. The table of section 1 comes "
                  "from an earlier run on another machine (AVX-512 with bf16); compare ratios "
                  "within one table only.", ""] + training_rows(run["training"])


def cpu_section(cpu: dict, title: str = "## CPU (`vggnet bench`)", file: str = "cpu.json",
                run: str = "runs/cifar10_quick", note: str = "",
                training: bool = True) -> list[str]:
    env = cpu["environment"]
    out = [title, "",
           "```bash",
           "VGGNET_DATA=../shared/data vggnet bench --data-root ../shared/data \\",
           f"    --run {run} --out benchmarks/results/{file}",
           "```", "",
           _hardware(env) + f" CPU capability as torch sees it: "
           f"{env.get('cpu_capability', 'not recorded')}. One run of each benchmark; every "
           "ratio is measured in the same process as its baseline." + note, ""]
    out += ["### 1. Training throughput", ""]
    out += training_rows(cpu["training"]) if training else [
        "This run's training figures shared the CPU with other work; the training benchmark "
        "was run again alone: see \"Training throughput of the real loop\" below."]
    inf = cpu["inference"]
    out += ["", "### 2. Inference latency", "",
            f"{inf['model']}; {inf.get('timing', 'median of several runs after a warm-up')}. Baseline: torchvision's "
            "`vgg16()` in eager fp32. vggnet optimized: batch norm folded (a no-op for VGG16), "
            "channels_last, inference mode. ONNX Runtime fp32: the model of `vggnet export`. int8: ONNX Runtime static quantization (QDQ, "
            "per-channel weights), calibrated on real CIFAR-10 images.", "",
            "| batch | torchvision fp32 (ms) | vggnet optimized fp32 (ms) | ratio | ONNX Runtime fp32 (ms) | ratio | ONNX Runtime int8 (ms) | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for r in inf["latency"]:
        ort = (f"{r['onnxruntime_fp32_ms']} | {r['ratio_onnxruntime_fp32']:.2f}x"
               if "ratio_onnxruntime_fp32" in r else "not measured | -")
        out.append(f"| {r['batch']} | {r['torchvision_fp32_ms']} | {r['vggnet_optimized_fp32_ms']} | "
                   f"{_goal(r['ratio_fp32'], '<= 0.9x', r['ratio_fp32'] <= 0.9)} | {ort} | "
                   f"{r.get('onnxruntime_int8_ms', '-')} | "
                   + (_goal(r['ratio_int8'], '<= 0.5x', r['ratio_int8'] <= 0.5)
                      if 'ratio_int8' in r else "-") + " |")
    agree = inf.get("int8_agreement")
    if agree:
        ok = agree["top1_agreement"] >= 0.99
        out += ["", f"int8 vs fp32 on the CIFAR-10 test set ({agree['test_images']} images, the "
                f"model of `{agree['run']}`): top-1 agreement **{100 * agree['top1_agreement']:.2f}%** "
                f"({'meets' if ok else 'misses'} the goal >= 99%); top-1 accuracy fp32 "
                f"{100 * agree['fp32_top1']:.2f}%, int8 {100 * agree['int8_top1']:.2f}%."]
    tta = cpu.get("time_to_accuracy")
    if tta:
        out += ["", "### 3. Time to accuracy on the CPU", ""]
        if tta.get("reached", True):
            out.append(f"`configs/cifar10_quick.toml` (`{tta['run']}`) first reached "
                       f"{100 * tta['target']:.0f}% test top-1 after epoch {tta['epoch']}: "
                       f"**{tta['train_seconds']:.0f} s** of training "
                       f"({100 * tta['test_top1']:.2f}% at that epoch).")
        else:
            out.append(f"`{tta['run']}` did not reach {100 * tta['target']:.0f}% "
                       f"(best {100 * tta['best_top1']:.2f}%).")
    return out


def serve_load_section(runs: list[dict]) -> list[str]:
    """`benchmarks/serve_load.py`: requests/s and latency of `vggnet serve` per configuration
    and concurrency, and the batching goal at concurrency 32."""
    out = ["## `vggnet serve` under load (`benchmarks/serve_load.py`)", ""]
    if not runs:
        return out + ["Not run yet: `python benchmarks/serve_load.py --run RUN "
                      "--out benchmarks/results/serve_load.json`."]
    for r in runs:
        env = r["environment"]
        out += [f"### {r['title']}", "", "```bash",
                f"python benchmarks/serve_load.py --run {r['run']} --data-root ../shared/data \\",
                f"    --out benchmarks/results/{r['file']}", "```", "",
                _hardware(env) + f" Client: {r['client']}; at most {r['requests_per_level']} "
                f"requests or {r['time_limit_s']:.0f} s per level; dynamic batching with "
                f"--max-batch 32 --max-wait-ms {r['max_wait_ms']:g}.", "",
                "| configuration | concurrency | requests | failed | requests/s | p50 ms | p95 ms "
                "| p99 ms | mean batch |", "|---|---|---|---|---|---|---|---|---|"]
        rows = r["rows"]
        for row in rows:
            out.append(f"| {row['config']} | {row['concurrency']} | {row['requests']} | "
                       f"{row['failed']} | {row['requests_per_s']} | {row['p50_ms']} | "
                       f"{row['p95_ms']} | {row['p99_ms']} | {row['mean_batch']} |")
        out.append("")
        for backend in ("torch", "int8"):
            at = {row["max_batch"]: row for row in rows
                  if row["backend"] == backend and row["concurrency"] == 32}
            if 1 in at and 32 in at:
                ratio = at[32]["requests_per_s"] / at[1]["requests_per_s"]
                ok = (ratio >= 2 and at[32]["p99_ms"] < 1000
                      and not any(row["failed"] for row in rows))
                out.append(f"- {backend}, concurrency 32: batching gives {ratio:.2f}x the "
                           f"requests/s of one image at a time, p99 {at[32]['p99_ms']} ms, "
                           f"{sum(row['failed'] for row in rows)} failed requests in the whole "
                           f"run ({'meets' if ok else 'misses'} the goal >= 2x with p99 < 1 s "
                           "and none failed).")
        if r.get("note"):
            out += ["", r["note"]]
        out.append("")
    return out


def gpu_section(gpu: dict | None) -> list[str]:
    lines = ["## GPU: time to 94% on CIFAR-10", ""]
    if gpu:
        env = gpu["environment"]
        lines += [f"Hardware: {env['gpu']}; torch {env['torch']}.", "",
                  "| recipe | one-time data load (s) | epochs | first epoch at >= 94% | training s to 94% | training + evaluation s to 94% | best top-1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in gpu["recipes"]:
            lines.append(f"| `{r['recipe']}` | {r['data_load_s']} | {r['epochs']} | "
                         f"{r['epoch_reaching_94'] or 'not reached'} | {r['train_seconds_to_94'] or '-'} | "
                         f"{r.get('train_eval_seconds_to_94') or '-'} | "
                         f"{100 * r['best_top1']:.2f}% |")
        reached = [r for r in gpu["recipes"] if r.get("reference_top1") is not None]
        if reached:
            lines += ["", "Time to airbench's own accuracy on the same images (the fair target "
                      "where 94% is out of reach, as on the JPEG copy of CIFAR-10):", "",
                      "| recipe | target top-1 | first epoch at target | training + evaluation s |",
                      "|---|---|---|---|"]
            for r in reached:
                lines.append(f"| `{r['recipe']}` | {100 * r['reference_top1']:.2f}% | "
                             f"{r['epoch_reaching_reference'] or 'not reached'} | "
                             f"{r['train_eval_seconds_to_reference'] or '-'} |")
        if gpu.get("airbench"):
            a = gpu["airbench"]
            lines += ["", f"Reference on the same GPU and images: {a['reference']}: "
                      f"{a['train_eval_seconds']} s of training + evaluation "
                      f"({a['train_seconds']} + {a['eval_seconds']}; warm-up {a['warmup_s']} s "
                      f"apart), test top-1 {100 * a['test_top1']:.2f}% with flip + translate."]
    else:
        lines += ["Not measured: no GPU was available when this was written. The script is ready:",
                  "", "```bash",
                  "python benchmarks/gpu_time_to_94.py --data-root ../shared/data "
                  "--out benchmarks/results/gpu.json",
                  "python benchmarks/report.py", "```"]
    return lines


def airbench_cpu_section(result: dict | None) -> list[str]:
    """airbench94's recipe, written out in plain PyTorch, on the CPU: the baseline of
    configs/cifar10_speed.toml on the same images (docs/results.md compares the two)."""
    lines = ["## airbench94's recipe on the CPU (baseline of configs/cifar10_speed.toml)", "",
             "```bash", "python benchmarks/airbench_recipe_cpu.py --data-root ../shared/data "
             "--out benchmarks/results/airbench_cpu.json", "```", ""]
    if not result:
        return lines + ["Not run yet."]
    env = result["environment"]
    return lines + [
        f"Hardware: {env.get('cpu', '?')}; torch {env.get('torch', '?')}.", "",
        "| epochs | training s | images/s | test top-1 | with flip + translate views |",
        "|---|---|---|---|---|",
        f"| {result['epochs']} | {result['train_seconds']} | {result['images_per_second']} | "
        f"{100 * result['test_top1']:.2f}% | {100 * result['test_top1_tta']:.2f}% |"]


def backends_section(result: dict | None, training: dict | None = None,
                     title: str = "## CPU inference, every backend side by side (`vggnet bench`)",
                     out_file: str = "cpu_backends.json", run: bool = True) -> list[str]:
    """`vggnet bench --only inference`: every inference path side by side, with the goals of
    the CPU-backends work (vggnet's default path at least as fast as OpenVINO's best; bf16
    within 1.2x of OpenVINO's bf16; int8 <= 0.19x torchvision at batch 1; agreement with fp32
    >= 99.5%)."""
    from vggnet.bench import inference_table

    out = [title, "",
           "```bash", "vggnet bench --only inference --data-root ../shared/data \\",
           ("    --run runs/cifar10_quick " if run else "    ")
           + f"--out benchmarks/results/{out_file}", "```", ""]
    if result is None:
        return out + ["Not run yet."]
    env, inf = result["environment"], result["inference"]
    out += [_hardware(env) + f" Native bf16: {env.get('cpu_bf16') or 'none'} (so `auto` "
            f"precision is {env.get('auto_precision')}); onnxruntime {env.get('onnxruntime')}, "
            f"openvino {env.get('openvino')}. {inf['model']}; {inf['timing']}, every path in "
            "one process, interleaved. Ratios are to torchvision eager fp32 (lower is "
            "faster); the fastest path of each batch size is in bold. *precision ran* is what "
            "each engine reports it computed in (OpenVINO's from its runtime graph). Top-1 "
            "agreement: with the PyTorch fp32 model of the run on the whole CIFAR-10 test "
            "set.", ""]
    out += inference_table(inf)
    rows = {r["batch"]: r for r in inf["side_by_side"]}
    default = inf.get("vggnet_default")
    name = {"openvino-int8": "openvino_int8", "int8": "onnxruntime_int8"}.get(default)
    goals = []
    for b, r in rows.items():
        ov = {k: v for k, v in r["ms"].items() if k.startswith("openvino")}
        if not ov:
            continue
        best_ov = min(ov, key=ov.get)
        if name and name in r["ms"]:
            goals.append(f"batch {b}: vggnet's default path for a run with an int8 export "
                         f"(`--backend auto` = {default}) {r['ms'][name]} ms against "
                         f"OpenVINO's best ({best_ov}) {ov[best_ov]} ms.")
        if "vggnet_bf16" in r["ms"] and "openvino_bf16" in r["ms"]:
            q = r["ms"]["vggnet_bf16"] / r["ms"]["openvino_bf16"]
            goals.append(f"batch {b}: vggnet bf16 takes {_goal(q, '<= 1.2x', q <= 1.2)} "
                         "OpenVINO bf16's time.")
        for k in ("openvino_int8", "onnxruntime_int8"):
            if b == 1 and k in r["ratio"]:
                goals.append(f"batch 1: {k} at {_goal(r['ratio'][k], '<= 0.19x', r['ratio'][k] <= 0.19)}"
                             " torchvision's time.")
    agree = (inf.get("agreement") or {}).get("paths", {})
    for k, a in agree.items():
        ok = a["top1_agreement"] >= 0.995
        goals.append(f"{k} ({a['precision']}) agrees with fp32 on "
                     f"{100 * a['top1_agreement']:.2f}% ({'meets' if ok else 'misses'} the goal "
                     f">= 99.5%); top-1 {100 * a['top1']:.2f}% against fp32's "
                     f"{100 * a['fp32_top1']:.2f}%.")
    if goals:
        out += ["", "Goals:", ""] + [f"- {g}" for g in goals]
    if training:
        t = training["training"]
        out += ["", "Training on the same machine (`vggnet bench --only training`, the real "
                "`train_one_epoch`, default precision " + str(t.get("default_precision")) + "):",
                ""] + training_rows(t)
        if "ratio_bf16" in t and t.get("default_precision") == "bf16":
            out += ["", f"With the default precision (bf16 here) the engine trains at "
                    f"{_goal(t['ratio_bf16'], '>= 2.5x', t['ratio_bf16'] >= 2.5)} the tutorial "
                    "loop's rate."]
    return out


# soak runs shown, in order: (results file, what was measured and how)
SOAKS = [
    ("serve_soak.json", "one server process; the client beside the test suite running under "
                        "`benchmarks/cpu_load.py`"),
    ("serve_soak_workers1.json", "one server process, a tiny digits run (VGG-11-BN at width "
                                 "0.25, linear head, one epoch), where the HTTP path is most "
                                 "of the cost: the baseline of the next row"),
    ("serve_soak_workers2.json", "`--workers 2`: the front process and two workers (RSS "
                                 "summed), the same tiny run"),
]


def soak_section(results: list[dict]) -> list[str]:
    """`benchmarks/serve_soak.py`: sustained load with malformed uploads, and the RSS."""
    out = ["## `vggnet serve` soak test: sustained load with bad uploads (`benchmarks/serve_soak.py`)",
           "", "```bash", "python benchmarks/serve_soak.py --run runs/cifar10_quick --data-root "
           "../shared/data \\", "    --seconds 120 --concurrency 64 [--workers 2] --out "
           "benchmarks/results/serve_soak.json", "```", ""]
    if not results:
        return out + ["Not run yet."]
    out += ["The client runs in its own process on the same two cores.", "",
            "| run | workers | seconds | concurrency | valid requests (per s) | failed | "
            "malformed uploads | answered 4xx JSON | 5xx | RSS after warm-up | RSS max | growth "
            "| result |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for i, r in enumerate(results, 1):
        out.append(
            f"| `{r['run']}` ({i}) | {r.get('workers', 1)} | {r['seconds']:.0f} | "
            f"{r['concurrency']} | {r['valid']} ({r['valid'] / r['seconds']:.0f}) | "
            f"{r['valid_failed']} | {r['malformed']} | "
            f"{r['malformed'] - r['malformed_5xx'] - r['malformed_not_json']} "
            f"| {r['malformed_5xx']} | {r['rss_mb_first_after_warmup']} MB | "
            f"{r['rss_mb_max']} MB | {r['rss_growth_mb_after_warmup']} MB | "
            f"{'passed' if r['passed'] else 'FAILED'} |")
        env = r["environment"]
        capability = f" CPU capability: {env['cpu_capability']}." if env.get("cpu_capability") \
            else ""
        notes.append(f"({i}) {r['note']}. " + _hardware(env) + capability + " Statuses: "
                     + ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items())) + ".")
    return out + [""] + [line for note in notes for line in (note, "")] + [
        "The bound: RSS may grow by less than 100 MB after the first 20 s."]


def amx_off_section(run: dict | None) -> list[str]:
    """The Xeon's training step with oneDNN kept off the AMX tile units: is it a stand-in
    for an AVX512-BF16 CPU without AMX (the EPYC)?"""
    if not run:
        return []
    env, t = run["environment"], run["training"]
    return [f"The same Xeon with oneDNN capped at {env['onednn_max_cpu_isa']} (AMX used: "
            f"{env['cpu_amx_used']}, so `auto` took Winograd on maps of <= "
            f"{t['winograd_max_pixels']} pixels), `ONEDNN_MAX_CPU_ISA={env['onednn_max_cpu_isa']} "
            "python benchmarks/training_loop.py --data-root ../shared/data --out "
            "benchmarks/results/cpu_training_xeon_amx_off.json`: the default bf16 step at "
            f"{t['ratio_bf16']:.2f}x the tutorial loop ({t['vggnet_bf16_images_per_s']} against "
            f"{t['baseline_images_per_s']} images/s; direct convolutions only "
            f"{t['ratio_bf16_direct']:.2f}x; fp32 {t['ratio_fp32']:.2f}x). Without its tile "
            "units this Xeon's bf16 convolutions are far slower relative to its fp32 ones than "
            "the EPYC's, so it is no stand-in for that CPU.", ""]


def max_pool_section() -> list[str]:
    """`benchmarks/max_pool.py`: the inference path's 2x2 pooling against the alternatives."""
    out = ["## 2x2 max-pooling in the CPU inference path (`benchmarks/max_pool.py`)", ""]
    runs = sorted(RESULTS.glob("max_pool_*.json"))
    if not runs:
        return out + ["Not run yet: `python benchmarks/max_pool.py --out "
                      "benchmarks/results/max_pool_TAG.json`."]
    out += ["VGG-16's five pools at 224 px, channels-last, summed medians of interleaved calls; "
            "`rows_then_columns` is what the fused program runs, `four_views` what it ran "
            "before, `max_pool2d` PyTorch's (with indices).", "",
            "| file | CPU | batch | dtype | max_pool2d ms | four_views ms | rows_then_columns ms "
            "| ratio to four_views |", "|---|---|---|---|---|---|---|---|"]
    for path in runs:
        r = _load(path.name)
        ms = r["five_pools_ms"]
        out.append(f"| `{path.name}` | {r['environment']['cpu']} | {r['batch']} | {r['dtype']} "
                   f"| {ms['max_pool2d']} | {ms['four_views']} | {ms['rows_then_columns']} | "
                   f"{r['ratio_to_four_views']['rows_then_columns']:.2f}x |")
    return out


def _side(cpu: str) -> str:
    side = math.isqrt(AUTO_MAX_PIXELS[cpu])
    return f"maps of <= {side}x{side} ({AUTO_MAX_PIXELS[cpu]} pixels)"


# each per-layer table, with the rule `conv_algorithm = auto` drew from it (models/winograd.py)
WINOGRAD_LAYERS = [
    ("winograd_layers.md", "2-core AMD EPYC with AVX512-BF16, no AMX: Winograd wins from 8x8 "
                           f"maps down, so `conv_algorithm = auto` takes {_side('avx512_bf16')}"),
    ("winograd_layers_amx.md", "2-core Intel Xeon with AMX: oneDNN's direct convolution runs "
                               "on the tile units and wins on 8x8 maps, Winograd only below, "
                               f"so `auto` takes {_side('amx')} on AMX CPUs"),
]


def winograd_section() -> list[str]:
    lines = ["## Winograd vs direct convolution, per layer (CPU, bf16)", ""]
    found = [(RESULTS / f, note) for f, note in WINOGRAD_LAYERS if (RESULTS / f).is_file()]
    if not found:
        return lines + ["Not run yet: `python benchmarks/winograd_layers.py`."]
    for path, note in found:
        tag = path.stem.removeprefix("winograd_layers").lstrip("_")
        command = "python benchmarks/winograd_layers.py" + (f" --tag {tag}" if tag else "")
        lines += [f"{note}:", "", "```bash", command, "```", "", path.read_text().strip(), ""]
    return lines[:-1]


def main() -> None:
    lines = ["# Benchmark results", "",
             "Written by `python benchmarks/report.py` from `benchmarks/results/*.json`; the "
             "commands that produce those files are given with each section.", ""]
    lines += backends_section(_load("cpu_backends.json"), _load("cpu_training_epyc.json")) + [""]
    amx = _load("cpu_backends_xeon_amx.json")
    if amx:
        measured = bool(amx["inference"].get("agreement"))
        training = _load("cpu_training_xeon_amx.json")
        lines += backends_section(
            amx, training,
            "## The same on an Intel Xeon with AMX", "cpu_backends_xeon_amx.json", run=measured)
        rules = "".join(f" --max-pixels {px}" for px in
                        ((training or {}).get("training") or {}).get("winograd_rules", {}))
        lines += ["", ("Agreement was measured with a `cifar10_quick` run trained on this "
                       "machine. " if measured else "No CIFAR run was at hand on this machine, "
                       "so its agreement column is not measured. ")
                  + "The training rows come from `python benchmarks/training_loop.py "
                  f"--data-root ../shared/data{rules} --out "
                  "benchmarks/results/cpu_training_xeon_amx.json`.", ""]
        lines += amx_off_section(_load("cpu_training_xeon_amx_off.json"))
    cpu = _load("cpu.json")
    lines += cpu_section(cpu) if cpu else ["## CPU", "", "Not run yet: `vggnet bench`."]
    avx2 = _load("cpu_avx2.json")
    if avx2:
        lines += [""] + cpu_section(
            avx2, "## CPU (`vggnet bench`) after the redesign, on an AVX2 machine",
            "cpu_avx2.json", "runs/cifar10_quick_fp32",
            " The same benchmarks as above, re-run after the redesign (training now times "
            "`train_one_epoch`, the loop `vggnet train` runs) on a machine without AVX-512 or "
            "native bf16, so no bf16 rows; its quick run was trained in fp32 there "
            "(`--precision fp32`). Its int8 model has 7-bit weights, the default since "
            "full-range int8 was found to saturate on such CPUs (docs/deployment.md). Its "
            "time to 85% (section 3) includes three epochs (2 to 4) that shared the CPU with test runs "
            "(113 to 170 training images/s instead of about 440); at the clean rate its 12 "
            "epochs take about 1,360 s.",
            training=False)
    lines += [""] + training_loop_section(_load("training_loop.json"))
    loads = []
    for file, title, note in SERVE_LOADS:
        result = _load(file)
        if result:
            loads.append({**result, "file": file, "title": title, "note": note})
    lines += [""] + serve_load_section(loads)
    lines += [""] + soak_section([{**r, "note": note} for r, note in
                                  ((_load(f), n) for f, n in SOAKS) if r])
    lines += [""] + transfer_section(_load("transfer_imagenette.json"))
    lines += [""] + gradcam_section(_load("gradcam_speed.json"))
    lines += [""] + stylize_section([r for r in (_load(f) for f, _ in STYLIZE_RUNS) if r])
    lines += [""] + imagenette_section(
        {f: r for f, *_ in IMAGENETTE_RUNS if (r := _load(f))},
        RESULTS / "paper_tables_imagenette.md")
    lines += [""] + gpu_section(_load("gpu.json"))
    lines += [""] + airbench_cpu_section(_load("airbench_cpu.json"))
    lines += [""] + winograd_section()
    lines += [""] + max_pool_section()
    protocols = RESULTS / "paper_protocols.md"
    lines += ["", "## The paper's test protocols on CIFAR-10", ""]
    if protocols.is_file():
        lines += ["```bash",
                  "python benchmarks/paper_protocols.py --data-root ../shared/data --epochs 12 --limit 2000",
                  "```", "", protocols.read_text().strip()]
    else:
        lines.append("Not run yet: `python benchmarks/paper_protocols.py`.")
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print((HERE / "RESULTS.md").read_text())


if __name__ == "__main__":
    main()

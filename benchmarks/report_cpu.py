"""Sections of benchmarks/RESULTS.md for the CPU: training speed against the tutorial loop,
every inference backend side by side, and the kernel-level comparisons behind the engine's
choices (Winograd per layer, 2x2 pooling, where a training step's time goes)."""

from __future__ import annotations

import math

from report_common import HERE, RESULTS, _goal, _hardware, _load

from vggnet.bench.step_profile import profile_table
from vggnet.training.winograd import AUTO_MAX_PIXELS


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
                   f"{_goal(t['ratio_bf16'], '>= 2.5x', t['ratio_bf16'] >= 2.5)} |")
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
        if "vggnet_bf16" not in r["ms"] and "openvino_fp32" in r["ms"]:  # no native bf16
            q = r["ms"]["vggnet_fp32"] / r["ms"]["openvino_fp32"]
            goals.append(f"batch {b}: without an int8 export `--backend auto` runs vggnet's "
                         f"engine in fp32 here: {r['ms']['vggnet_fp32']} ms, {q:.2f}x OpenVINO "
                         f"fp32's time ({'as fast or faster' if q <= 1.0 else 'slower'}).")
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


def _runs_or_how(title: str, pattern: str, command: str) -> tuple[list[str], list]:
    """A section's title and its result files (one per machine), or, with none, the title and
    the command that makes one."""
    runs = sorted(RESULTS.glob(pattern))
    return [title, ""] + ([] if runs else [f"Not run yet: `{command}`."]), runs


def max_pool_section() -> list[str]:
    """`benchmarks/max_pool.py`: the inference path's 2x2 pooling against the alternatives."""
    out, runs = _runs_or_how(
        "## 2x2 max-pooling in the CPU inference path (`benchmarks/max_pool.py`)",
        "max_pool_*.json",
        "python benchmarks/max_pool.py --out benchmarks/results/max_pool_TAG.json")
    if not runs:
        return out
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


def prepack_section() -> list[str]:
    """`benchmarks/prepack_per_shape.py`: convolution weights reordered per input shape."""
    out, runs = _runs_or_how(
        "## Convolution weights reordered per input shape (`benchmarks/prepack_per_shape.py`)",
        "prepack_per_shape_*.json",
        "python benchmarks/prepack_per_shape.py --out benchmarks/results/prepack_per_shape_TAG.json")
    if not runs:
        return out
    out += ["The PyTorch engine's fused program, VGG-16 at 224 px, random weights, medians of "
            "interleaved calls: `once` reorders each convolution's weights into oneDNN's "
            "layout for no shape in particular (the earlier program; oneDNN reorders them "
            "again inside every call wherever it blocks them otherwise for the real input), "
            "`per_shape` for each input shape it meets (the program now).", "",
            "| file | CPU | capability | precision | batch | once ms | per_shape ms | ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for path in runs:
        r = _load(path.name)
        env = r["environment"]
        for row in r["rows"]:
            out.append(f"| `{path.name}` | {env['cpu']} | {env.get('cpu_capability')} | "
                       f"{r['precision']} | {row['batch']} | {row['ms']['once']} | "
                       f"{row['ms']['per_shape']} | {row['ratio_per_shape_to_once']:.2f}x |")
    return out


def engines_section() -> list[str]:
    """`vggnet bench --only engines`: vggnet's engine, torch.compile and OpenVINO."""
    out, runs = _runs_or_how(
        "## The PyTorch engines against OpenVINO (`vggnet bench --only engines`)",
        "engines_*.json",
        "vggnet bench --only engines --out benchmarks/results/engines_TAG.json")
    if not runs:
        return out
    from vggnet.bench.engines import engines_table

    for path in runs:
        r = _load(path.name)
        env, e = r["environment"], r["engines"]
        out += [f"`{path.name}`: {_hardware(env)} Input {e['input']}, random weights, "
                f"{e['timing']}. Each cell: ms per call (time as a multiple of OpenVINO's in "
                "the same precision); the fastest of each row in bold. `inductor_*` is "
                "torch.compile with inductor's freezing of the same folded, channels-last "
                "model; its first call at each batch size compiles: "
                + "; ".join(f"{m} {k} {', '.join(f'{v} s at batch {b}' for b, v in c.items())}"
                            for m, per in e["compile_seconds"].items() for k, c in per.items())
                + " (with inductor's cache of earlier compiles on this machine).", ""]
        out += engines_table(e)
        ratios = [f"{r['model']} batch {r['batch']} {p}: "
                  f"{r['ms'][f'inductor_{p}'] / r['ms'][f'vggnet_{p}']:.2f}x"
                  for r in e["rows"] for p in ("fp32", "bf16")
                  if f"inductor_{p}" in r["ms"] and f"vggnet_{p}" in r["ms"]]
        if ratios:
            out += ["", "torch.compile's time as a multiple of vggnet's engine in the same "
                    "precision: " + "; ".join(ratios) + "."]
        out.append("")
    return out


def step_profile_section() -> list[str]:
    """`benchmarks/training_profile.py`: the training step's time, part by part, per CPU."""
    out, runs = _runs_or_how(
        "## Where a CPU training step's time goes (`benchmarks/training_profile.py`)",
        "training_profile_*.json",
        "python benchmarks/training_profile.py --data-root ../shared/data --out "
        "benchmarks/results/training_profile_TAG.json")
    if not runs:
        return out
    out += ["VGG-16-BN on CIFAR-10 at batch 128, `vggnet train`'s own loop under "
            "`torch.profiler`: each operator's own CPU time, summed into the parts of the step "
            "(shares of the profiled time; images/s timed without the profiler)."]
    for path in runs:
        r = _load(path.name)
        env, p = r["environment"], r["profile"]
        rule = (f", Winograd on maps of <= {p['winograd_max_pixels'][0]} pixels"
                if p.get("winograd_max_pixels") else "")
        native = f", {env['cpu_bf16']}" if env.get("cpu_bf16") else ""
        cap = (f", oneDNN capped at {env['onednn_max_cpu_isa']}"
               if env.get("onednn_max_cpu_isa") else "")
        out += ["", f"`{path.name}`: {env['cpu']} ({env['cores']} cores{native}{cap}), "
                f"{p['precision']}"
                f"{rule}; {p['images_per_s']} images/s, {p['step_ms']} ms per step", ""]
        out += profile_table(p)
    return out


def _side(cpu: str) -> str:
    side = math.isqrt(AUTO_MAX_PIXELS[cpu])
    return f"maps of <= {side}x{side} ({AUTO_MAX_PIXELS[cpu]} pixels)"


# each per-layer table, with the rule `conv_algorithm = auto` drew from it (training/winograd.py)
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

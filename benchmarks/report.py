"""Write benchmarks/RESULTS.md from the JSON files the benchmark scripts leave in results/.

    python benchmarks/report.py

Only measured figures appear; a benchmark that has not been run says so.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when loaded by path (tests)

from report_common import HERE, RESULTS, _hardware, _load  # noqa: E402
from report_cpu import (amx_off_section, backends_section, cpu_section,  # noqa: E402,F401
                        engines_section, max_pool_section, prepack_section, step_profile_section,
                        training_loop_section, training_rows, winograd_section)
from report_features import (IMAGENETTE_RUNS, STYLIZE_RUNS, gradcam_section,  # noqa: E402
                             imagenette_section, stylize_section)
from report_transfer import transfer_section  # noqa: E402


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
    avx2 = _load("cpu_backends_avx2.json")
    if avx2:
        measured = bool(avx2["inference"].get("agreement"))
        lines += backends_section(
            avx2, None, "## The same on an AVX2-only AMD EPYC (no AVX-512, no native bf16)",
            "cpu_backends_avx2.json", run=measured)
        lines += ["", "No bf16 timings: without native bf16 `auto` is fp32, and bf16 would be "
                  "emulated, slower than fp32 (vggnet_bf16's agreement is that of its numerics, "
                  "for `--precision bf16`). "
                  + ("Agreement was measured with a `cifar10_quick` run trained on this machine "
                     "(in fp32, its `auto` here)." if measured else
                     "No CIFAR run was at hand, so agreement is not measured."), ""]
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
    lines += [""] + prepack_section()
    lines += [""] + engines_section()
    lines += [""] + step_profile_section()
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

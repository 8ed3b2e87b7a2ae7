"""The documentation's charts, drawn from the result files (nothing is measured here):

* ``docs/deployment_backends.png``: VGG-16 latency at batch 1 and 32 of every inference
  backend, as a multiple of torchvision's eager fp32 time, per CPU
  (``cpu_backends*.json`` of ``vggnet bench --only inference``);
* ``docs/transfer_conditions.png``: top-1 of the four ways of transfer on held-out
  Imagenette classes, each seed's run and their mean (``transfer_imagenette.json``);
* ``docs/protocols_error.png``: top-1 error of each of the paper's test protocols per
  training scale (``paper_protocols.json`` on CIFAR-10).

    python benchmarks/plot_docs.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS, DOCS = ROOT / "benchmarks" / "results", ROOT / "docs"
CPUS = {"cpu_backends.json": "EPYC, AVX512-BF16", "cpu_backends_xeon_amx.json": "Xeon, AMX",
        "cpu_backends_avx2.json": "EPYC, AVX2 only"}
PATHS = ["torchvision", "vggnet_fp32", "onnxruntime_fp32", "openvino_fp32", "vggnet_bf16",
         "openvino_bf16", "onnxruntime_int8", "openvino_int8"]


def backends() -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    files = [f for f in CPUS if (RESULTS / f).is_file()]
    width = 0.8 / len(files)
    for ax, batch in zip(axes, (1, 32)):
        for k, name in enumerate(files):
            rows = json.loads((RESULTS / name).read_text())["inference"]["side_by_side"]
            ratio = next(r["ratio"] for r in rows if r["batch"] == batch)
            xs = [i + (k - (len(files) - 1) / 2) * width for i in range(len(PATHS))]
            ax.barh(xs, [ratio.get(p, float("nan")) for p in PATHS], height=width,
                    label=CPUS[name])
        ax.set_yticks(range(len(PATHS)), [p.replace("_", " ") for p in PATHS])
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", lw=0.8)
        ax.set_xlabel("time per batch, x torchvision eager fp32 (lower is faster)")
        ax.set_title(f"VGG-16, 224 px, batch {batch}")
    axes[0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = DOCS / "deployment_backends.png"
    fig.savefig(out, dpi=110)
    return out


def transfer() -> Path:
    data = json.loads((RESULTS / "transfer_imagenette.json").read_text())["conditions"]
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for i, (name, row) in enumerate(data.items()):
        tops = [100 * r["top1"] for r in row["runs"]]
        ax.scatter(tops, [i] * len(tops), color="C0", s=18, zorder=3)
        ax.barh(i, 100 * row["mean_top1"], color="C0", alpha=0.35)
        ax.text(100 * row["mean_top1"] + 0.2, i, f"{100 * row['mean_top1']:.2f}%",
                va="center", fontsize=9)
    ax.set_yticks(range(len(data)), list(data))
    ax.invert_yaxis()
    ax.set_xlim(70, 83)
    ax.set_xlabel("top-1 on the held-out classes' val photos (%): bar = mean, dots = seeds")
    ax.set_title("3 new Imagenette classes, 50 training photos each")
    fig.tight_layout()
    out = DOCS / "transfer_conditions.png"
    fig.savefig(out, dpi=110)
    return out


def protocols() -> Path:
    rows = json.loads((RESULTS / "paper_protocols.json").read_text())["rows"]
    keys = [("single", "centre crop, Q"), ("dense_single", "dense, Q"),
            ("dense_multi", "dense, several Q"), ("multicrop_multi", "multi-crop, several Q"),
            ("dense+multicrop_multi", "dense + multi-crop")]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(keys)
    for k, (key, label) in enumerate(keys):
        xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r[key][0] for r in rows], width=width, label=label)
    ax.set_xticks(range(len(rows)), [f"train {r['train_scale']}" for r in rows])
    ax.set_ylabel("top-1 error (%)")
    ax.set_ylim(12, 19.5)
    ax.set_title("CIFAR-10, the paper's test protocols (lower is better)")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    out = DOCS / "protocols_error.png"
    fig.savefig(out, dpi=110)
    return out


if __name__ == "__main__":
    for path in (backends(), transfer(), protocols()):
        print(f"wrote {path.relative_to(ROOT)}")

"""The transfer-learning section of benchmarks/RESULTS.md (`benchmarks/transfer_imagenette.py`)."""

from __future__ import annotations


def transfer_table(r: dict) -> list[str]:
    """The comparison table alone (also shown in docs/transfer.md)."""
    seeds = len(next(iter(r["conditions"].values()))["runs"])
    lines = [f"| condition | top-1, mean of {seeds} seeds [min-max] | command |",
             "|---|---|---|"]
    best = max(c["mean_top1"] for c in r["conditions"].values())
    for name, c in r["conditions"].items():
        mean = f"{100 * c['mean_top1']:.2f}%"
        if c["mean_top1"] == best:
            mean = f"**{mean}**"
        lines.append(f"| {name} | {mean} [{100 * c['min_top1']:.1f}-{100 * c['max_top1']:.1f}] "
                     f"| `{c['command']}` |")
    return lines


def transfer_section(r: dict | None) -> list[str]:
    out = ["## Transfer learning on held-out Imagenette classes", "", "```bash",
           "python benchmarks/transfer_imagenette.py --data ../shared/data/imagenette-224.tar.gz",
           "```", ""]
    if r is None:
        return out + ["Not run yet."]
    task = r["task"]
    return out + [
        f"The backbone: `{r['backbone']['recipe']}` trained on {r['backbone']['classes']} "
        f"Imagenette classes ({100 * r['backbone']['top1']:.2f}% top-1 on their val photos). "
        f"The new task: the 3 classes it never saw ({', '.join(task['held_out_classes'])}), "
        f"{task['train_per_class']} training photos each, scored on all "
        f"{task['val_images']} of their val photos (best epoch's top-1, flip-averaged as the "
        f"recipe evaluates). Measured on {r['hardware']}.", ""] + transfer_table(r)

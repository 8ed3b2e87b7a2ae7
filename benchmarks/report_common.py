"""What the report's sections share: where the results are, how a ratio and a machine read."""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def _goal(value: float, goal: str, ok: bool) -> str:
    return f"{value:.2f}x ({'meets' if ok else 'misses'} the goal {goal})"


def _hardware(env: dict) -> str:
    return (f"Hardware: {env['cpu']}, {env['cores']} cores ({env['torch_threads']} torch threads), "
            f"no GPU. torch {env['torch']}, torchvision {env['torchvision']}, "
            f"Python {env['python']}.")

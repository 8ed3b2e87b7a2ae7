"""Readable class names: WordNet ids (ImageNet's class folders) shown with their names.

ImageNet-style folders are named by WordNet id (``n01440764``); a prediction is easier to read
as ``n01440764 tench``. The bundled table holds the 1,000 ILSVRC-2012 classes.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

_WNID = re.compile(r"^n\d{8}$")


@lru_cache(maxsize=1)
def imagenet_classes() -> dict[str, str]:
    """WordNet id -> short readable name for ImageNet-1k's classes, in label order."""
    text = resources.files("vggnet.data").joinpath("imagenet_classes.tsv").read_text("utf-8")
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {wnid: name for wnid, name in rows}


def readable(classes: list[str]) -> list[str]:
    """``classes`` with the name appended to each known WordNet id ("n01440764 tench");
    other names are returned unchanged."""
    table = imagenet_classes()
    return [f"{c} {table[c]}" if _WNID.match(c) and c in table else c for c in classes]


def matches(label: str, query: str) -> bool:
    """Whether ``query`` names the class ``label``: the whole label, the WordNet id alone or
    the readable name alone (case-insensitive)."""
    q = query.strip().lower()
    label = label.lower()
    if q == label:
        return True
    wnid, _, name = label.partition(" ")
    return bool(_WNID.match(wnid)) and q in (wnid, name)

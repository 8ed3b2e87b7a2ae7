"""Fault points: named places where a test makes the process fail, to prove what a crash
there leaves behind (a leaf of the package; nothing else here reads the variable).

``VGGNET_FAULT="ACTION:POINT[@N][,rank=R][,attempt=A]"`` fails the process the Nth time
(default: the first) it reaches POINT; with ``rank``, only the process of that torchrun rank
(``RANK``); with ``attempt``, only in that attempt of a torchrun job (``0``: before any
restart; ``TORCHELASTIC_RESTART_COUNT``). ACTION is ``kill`` (SIGKILL: no handler, no cleanup, as a power cut or the
out-of-memory killer), ``interrupt`` (SIGINT, as Ctrl-C) or ``raise`` (an ``OSError``, as a
failing disk). The points:

``train.step``           after each optimizer step of a training run
``write.before_rename``  a file's complete temporary copy is on disk, the old file untouched
``write.after_rename``   the new file has replaced the old one; its folder is not yet synced

A write's points also answer to ``POINT/FILENAME`` (``write.before_rename/last.safetensors``),
so a test can name the file. Unset, as everywhere outside the tests, a point costs one
environment lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "VGGNET_FAULT"
ACTIONS = ("kill", "interrupt", "raise")
_reached: dict[str, int] = {}


def fault_point(name: str, detail: str | None = None) -> None:
    """Fail here if ``VGGNET_FAULT`` names this point (see the module's docstring)."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return
    action, _, where = spec.partition(":")
    where, *conditions = where.split(",")
    point, _, nth = where.partition("@")
    if point not in (name, f"{name}/{detail}"):
        return
    now = {"rank": os.environ.get("RANK", "0"),
           "attempt": os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")}
    for condition in conditions:
        key, _, value = condition.partition("=")
        if now.get(key.strip()) != value.strip():
            return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != int(nth or 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "interrupt":
        os.kill(os.getpid(), signal.SIGINT)
    elif action == "raise":
        raise OSError(f"fault injected at {point} ({VARIABLE})")
    else:
        raise ValueError(f"{VARIABLE}={spec!r}: the action must be one of {', '.join(ACTIONS)}")

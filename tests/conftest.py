import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# the shared data beside the project (also found from a copy of the tests one level down,
# such as mutation testing's mutants/)
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
              ROOT.parent / "shared")
CIFAR_TAR = SHARED / "data" / "cifar10-jpeg.tar.gz"

# Two cores on the reference machine; more threads than cores only slows the tests.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    if not CIFAR_TAR.is_file():
        pytest.skip(f"real CIFAR-10 not found at {CIFAR_TAR} (see shared/data/README.md)")
    return CIFAR_TAR


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with the given feature flags: ``cpu("avx2", "avx512_bf16")``."""
    from vggnet import device as dev

    def pretend(*flags):
        monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    return pretend


def pytest_itemcollected(item):
    """A test moved out of `make test` says why: ``@pytest.mark.slow(reason="...")``."""
    for mark in item.iter_markers("slow"):
        if not mark.kwargs.get("reason"):
            raise pytest.UsageError(f"{item.nodeid}: a slow marker needs reason=\"why it is "
                                    "not in make test\"")

"""The package as users get it: a wheel built with `python -m build`, installed away from
the repository, finds its recipes by name and reports its version."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import vggnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build backend (setuptools) of this environment, so no download
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                           "--outdir", str(out), str(ROOT)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (whl,) = out.glob("vggnet-*.whl")
    return whl


def test_the_wheel_ships_every_recipe(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vggnet/configs/cifar10_quick.toml" in names
    assert "vggnet/configs/imagenet/vgg16_S256-512.toml" in names
    assert "vggnet/configs/imagenette_quick.toml" in names
    assert "vggnet/data/imagenet_classes.tsv" in names  # WordNet id -> name, read at run time
    assert f"vggnet-{vggnet.__version__}.dist-info/METADATA" in names
    meta = zipfile.ZipFile(wheel).read(f"vggnet-{vggnet.__version__}.dist-info/METADATA").decode()
    # users get compatible ranges; the exact tested pair lives in constraints.txt
    assert "Requires-Dist: torch<3,>=2.4" in meta and "==" not in meta.split("Requires-Dist: torch")[1].splitlines()[0]


def test_installed_wheel_finds_packaged_recipes_outside_the_repository(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()  # no configs/ and no src/ here
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = ("import vggnet, vggnet.cli, sys; print(vggnet.__file__); "
            "sys.exit(vggnet.cli.main(sys.argv[1:]))")
    run = lambda *args: subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=env,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    listed = run("recipes")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].startswith(str(target))  # the installed copy ran
    assert "cifar10_quick" in listed.stdout and "imagenet/vgg11_S256" in listed.stdout
    trained = run("train", "--config", "demo_digits", "--epochs", "1", "--train-subset", "200",
                  "--progress", "false", "--out", str(work / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "done: best test top-1" in trained.stdout and (work / "run" / "best.safetensors").is_file()
    version = run("--version")
    assert version.stdout.splitlines()[-1] == f"vggnet {vggnet.__version__}"

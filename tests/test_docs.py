"""The documentation cannot drift: the site builds with ``mkdocs build --strict`` (a broken link,
a missing anchor or an API reference to nothing fails it), the README's links point at files
that exist, and every command block marked ``<!-- runnable -->`` in the README and the guides
runs as written (offline, on the bundled digits)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = re.compile(r"<!-- runnable -->\s*\n```bash\n(.*?)```", re.S)


def runnable_blocks(page: Path) -> list[list[str]]:
    """The command lines of the runnable blocks of a page, continuation lines joined."""
    blocks = []
    for body in RUNNABLE.findall(page.read_text()):
        lines = body.replace("\\\n", " ").splitlines()
        blocks.append([line for line in lines if line.strip() and not line.startswith("#")])
    return blocks


PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f",
                           str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "Build a registered model by name" in api  # the reference comes from docstrings


def test_the_readme_is_a_front_page_whose_links_exist():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 150
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            assert (ROOT / target).exists(), target


def test_there_are_runnable_blocks_to_check():
    pages = {p.name for p in PAGES if runnable_blocks(p)}
    assert {"README.md", "index.md", "transfer.md", "finetune.md"} <= pages


def _finetune_stand_ins(folder: Path, env: dict) -> str:
    """What the fine-tune guide's reader brings, made locally: a folder of photos of mixed
    sizes and modes, and VGG-16-BN weights in torchvision's layout (random, fp16) in the
    cache folder the guide names, under the download's name with the stand-in's own
    checksum (the driver points the published name at it). Returns the driver's prelude."""
    import hashlib

    import torch
    import torchvision

    from helpers import photo_folder

    photo_folder(folder / "photos", per_class=4, junk=False)  # predict exits 1 on junk
    sd = torchvision.models.vgg16_bn().state_dict()
    blob = folder / "stand-in.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()[:8]
    cache = folder / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    blob.rename(cache / f"vgg16_bn-{digest}.pth")
    env["TORCH_HOME"] = str(folder / "torch")
    return ("import vggnet.models.hub as hub; hub.URLS['vgg16_bn'] = "
            f"'https://download.pytorch.org/models/vgg16_bn-{digest}.pth'")


# pages whose reader brings something of their own, and why a page runs only in `make
# test-slow`
STAND_INS = {"finetune.md": _finetune_stand_ins}
SLOW_PAGES = {"finetune.md": "trains and exports a full VGG-16-BN at 224 px (minutes on two "
                             "cores); tests/test_photos.py covers the same paths at small size"}


def _lines(page: Path) -> list[str]:
    lines = [line for block in runnable_blocks(page) for line in block]
    for line in lines:
        assert shlex.split(line, comments=True)[0] == "vggnet", \
            f"{page.name}: a runnable line must be a vggnet command"
    return lines


@pytest.fixture(scope="module")
def plain_pages(tmp_path_factory) -> dict[str, str | None]:
    """The pages that need nothing brought, run in one Python process (each page in a fresh
    folder of its own, with its own cache): ``{page: None, or why it failed}``. One process
    for all pages, as one for all lines of a page: each started process spent seconds
    importing torch again."""
    import json

    root = tmp_path_factory.mktemp("pages")
    jobs = [{"page": p.name, "cwd": str(root / p.stem), "lines": _lines(p)}
            for p in PAGES if runnable_blocks(p) and p.name not in STAND_INS]
    for job in jobs:
        Path(job["cwd"]).mkdir()
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run([sys.executable, "-c", _PAGES_DRIVER, str(root / "jobs.json"),
                           str(root / "results.json")], capture_output=True, text=True,
                          timeout=1800, env=dict(os.environ))
    assert (root / "results.json").is_file(), done.stderr[-3000:]
    return json.loads((root / "results.json").read_text())


@pytest.mark.parametrize("page", [pytest.param(p, marks=pytest.mark.slow(reason=SLOW_PAGES[p.name])) if p.name in SLOW_PAGES
                                  else p for p in PAGES if runnable_blocks(p)],
                         ids=lambda p: p.name)
def test_runnable_commands_run_as_written(page, tmp_path, request):
    """Each page's blocks run in order in a fresh folder (a later block may use what an
    earlier one made), every line through vggnet's command line. Pages that need stand-ins
    run in a process of their own, the others together (``plain_pages``)."""
    if page.name not in STAND_INS:
        failure = request.getfixturevalue("plain_pages")[page.name]
        assert failure is None, f"{page.name}: {failure}"
        return
    env = {**os.environ, "VGGNET_CACHE": str(tmp_path / "cache")}
    prelude = STAND_INS[page.name](tmp_path, env)
    done = subprocess.run([sys.executable, "-c", _DRIVER, prelude, *_lines(page)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, f"{page.name}: {done.stderr[-3000:]}"


# every page's lines in its own folder and cache, as `vggnet ...` would run them; a page stops
# at its first failing line, which is recorded with the end of what it printed to stderr
_PAGES_DRIVER = """
import contextlib, io, json, os, shlex, sys
from vggnet.cli import main
results = {}
for job in json.load(open(sys.argv[1])):
    os.chdir(job["cwd"])
    os.environ["VGGNET_CACHE"] = os.path.join(job["cwd"], "cache")
    results[job["page"]] = None
    for line in job["lines"]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                code = main(shlex.split(line, comments=True)[1:])
        except SystemExit as exc:
            code = exc.code
        except Exception as exc:
            code = f"{type(exc).__name__}: {exc}"
        if code not in (0, None):
            results[job["page"]] = f"`{line}` failed ({code}): {err.getvalue()[-2000:]}"
            break
json.dump(results, open(sys.argv[2], "w"))
"""


# runs each line as `vggnet ...` would (the same main, its exit status checked), stopping at
# the first that fails and naming it; the first argument is Python run before (stand-ins)
_DRIVER = """
import shlex, sys
exec(sys.argv[1])
from vggnet.cli import main
for line in sys.argv[2:]:
    try:
        code = main(shlex.split(line, comments=True)[1:])
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        sys.exit(f"`{line}` failed with exit status {code}")
"""

# pages for the people who build vggnet, where its working paths and history belong
DEVELOPER_PAGES = {"benchmarks.md", "development.md"}


def test_user_guides_name_no_working_paths_of_the_project():
    """A reader has no ../shared folder: the guides name their own data (a copy, --download)."""
    for page in PAGES:
        if page.name in DEVELOPER_PAGES:
            continue
        for n, line in enumerate(page.read_text().splitlines(), 1):
            assert "../shared" not in line and "shared/data" not in line, \
                f"{page.name}:{n}: {line.strip()}"


def headline_rows(text: str) -> list[str]:
    """The rows of the README's table of headline results."""
    section = text.split("## Headline results", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith(("| what", "|---"))]


def test_every_headline_figure_links_to_the_file_it_came_from():
    """Each row of the README's headline table links at least one result file (a benchmark's
    JSON or Markdown under benchmarks/results/) or the test that measures it, and the file
    is there."""
    rows = headline_rows((ROOT / "README.md").read_text())
    assert len(rows) >= 6
    for row in rows:
        sources = [t for t in re.findall(r"\]\(([^)#]+)", row)
                   if t.startswith(("benchmarks/results/", "tests/"))]
        assert sources, f"a headline row links no result file: {row[:80]}"
        for target in sources:
            assert (ROOT / target).is_file(), f"{target} (in: {row[:60]}...) does not exist"


def test_the_models_page_shows_the_papers_table_1_as_the_code_builds_it():
    """docs/models.md's Table 1 is the configurations of models/configs.py, written out by
    benchmarks/model_table.py: a configuration changed in the code fails here until the page
    is regenerated."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from model_table import table1
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert table1() in (ROOT / "docs" / "models.md").read_text()

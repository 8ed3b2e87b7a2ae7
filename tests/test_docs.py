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
    assert {"README.md", "index.md", "transfer.md"} <= pages


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_blocks(p)],
                         ids=lambda p: p.name)
def test_runnable_commands_run_as_written(page, tmp_path):
    """Each page's blocks run in order in a fresh folder (a later block may use what an
    earlier one made), every line through vggnet's command line, one after another in one
    Python process per page (each line in a process of its own spent most of the time
    importing torch again)."""
    env = {**os.environ, "VGGNET_CACHE": str(tmp_path / "cache")}
    lines = [line for block in runnable_blocks(page) for line in block]
    for line in lines:
        assert shlex.split(line, comments=True)[0] == "vggnet", \
            f"{page.name}: a runnable line must be a vggnet command"
    done = subprocess.run([sys.executable, "-c", _DRIVER, *lines], cwd=tmp_path,
                          capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, f"{page.name}: {done.stderr[-3000:]}"


# runs each line as `vggnet ...` would (the same main, its exit status checked), stopping at
# the first that fails and naming it
_DRIVER = """
import shlex, sys
from vggnet.cli import main
for line in sys.argv[1:]:
    try:
        code = main(shlex.split(line, comments=True)[1:])
    except SystemExit as exc:
        code = exc.code
    if code not in (0, None):
        sys.exit(f"`{line}` failed with exit status {code}")
"""
"""MkDocs hook: ``<!-- include benchmarks/RESULTS.md -->`` in a page is replaced by that file,
its links made relative to the docs (RESULTS.md links ``../docs/x.png``, the page ``x.png``),
so the site shows the results as they were measured without a copy in docs/."""

from pathlib import Path

MARK = "<!-- include benchmarks/RESULTS.md -->"
ROOT = Path(__file__).resolve().parents[2]


def on_page_markdown(markdown, page, config, files):
    if MARK not in markdown:
        return markdown
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    results = results.replace("](../docs/", "](")
    results = "\n".join(("#" + line) if line.startswith("#") else line
                        for line in results.splitlines())  # one level below the page's
    return markdown.replace(MARK, results)

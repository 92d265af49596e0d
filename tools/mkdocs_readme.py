"""MkDocs hook: the site's home page is README.md and its benchmarks page is
BENCHMARKS.md, with their links pointed into the site (so the two files the
repository shows at its top and the site never drift apart)."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_as_home() -> str:
    """README.md with `docs/x.md` links as `x.md` and the top-level files as site pages."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("](docs/", "](").replace("](BENCHMARKS.md)", "](benchmarks.md)")
    head, _, _ = text.partition("## Documentation")
    return head.rstrip() + (
        "\n\nThe guides, the API reference (built from the docstrings), "
        "[how it is tested](testing.md) and [the Keras internals it relies on](internals.md) "
        "are in the navigation.\n")


def benchmarks_page() -> str:
    """BENCHMARKS.md with `docs/x.md` links as `x.md`."""
    with open(os.path.join(ROOT, "BENCHMARKS.md"), encoding="utf-8") as f:
        return f.read().replace("](docs/", "](")


def on_page_markdown(markdown, page, config, files):
    """Replaces the placeholders `docs/index.md` and `docs/benchmarks.md`."""
    if page.file.src_uri == "index.md":
        return readme_as_home()
    if page.file.src_uri == "benchmarks.md":
        return benchmarks_page()
    return markdown

"""MkDocs hook: the site's home page is the README, with its links pointed
into the site (so the two never drift apart)."""

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


def on_page_markdown(markdown, page, config, files):
    """Replaces the placeholder `docs/index.md` with the README."""
    if page.file.src_uri == "index.md":
        return readme_as_home()
    return markdown

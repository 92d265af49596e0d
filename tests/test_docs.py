"""The documentation site builds with `mkdocs build --strict`: a broken link, a
missing page or an unresolved API reference fails here (and in CI)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Set up on a fresh machine" in home  # the README is the home page
    api = (tmp_path / "site" / "api" / "callbacks" / "index.html").read_text()
    assert "WarmUp" in api and "OneCycle" in api

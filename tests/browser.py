"""A real headless Chromium for the HTML pages (report, plan): the DOM it builds and a screenshot's
colours. Skips naming the missing package when Chromium is absent (fails instead under CI)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not exe:
        msg = ("chromium is not installed (Debian package `chromium`: apt-get install chromium; .ci/run installs "
               "it) - cannot check the HTML page in a real browser")
        if os.environ.get("CI") or os.environ.get("PARTIALDEPLOY_REQUIRE_CHROMIUM"):
            pytest.fail(msg)
        pytest.skip(msg)
    return exe


def render_page(html_path: Path, tmp_path: Path, size: str = "1200,2000") -> tuple[str, list]:
    """(the DOM Chromium built, the screenshot's colours as PIL ``getcolors``) of a local page."""
    exe = chromium()
    flags = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}"]
    dom = subprocess.run(flags + ["--dump-dom", Path(html_path).as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-1500:]
    shot = tmp_path / "shot.png"
    s = subprocess.run(flags + [f"--window-size={size}", f"--screenshot={shot}", Path(html_path).as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert s.returncode == 0 and shot.exists(), s.stderr[-1500:]
    from PIL import Image

    colors = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is not None and len(colors) > 50  # text and plots, not a blank page
    return dom.stdout, colors

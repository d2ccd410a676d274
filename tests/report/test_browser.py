"""The HTML report opened in real headless Chromium: it renders, every figure loads, the page is not blank."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image as mpimg

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="needs Debian's chromium (apt-get install chromium; "
        "`make test` installs it via WITH_BROWSER=1)",
    ),
]

# Appended to a copy of the report (never to the report itself): after the load event, mark how many
# images decoded to a real size.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});</script>"""


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180)


def test_html_report_renders_in_chromium(dumbbell_report, tmp_path):
    html = dumbbell_report.html.read_text()
    n_figs = len(dumbbell_report.figures)
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(html.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probe_page.as_uri())
    m = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert m, f"probe did not run; chromium stderr: {dom.stderr[-500:]}"
    assert (int(m.group(1)), int(m.group(2))) == (n_figs, n_figs)
    assert "Definitions and thresholds" in dom.stdout
    # negative control: the probe notices a broken figure
    broken = tmp_path / "broken.html"
    broken.write_text(probe_page.read_text().replace("base64,", "base64,AAAA", 1))
    dom = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", broken.as_uri())
    assert f'data-images="{n_figs - 1}/{n_figs}"' in dom.stdout

    shot = tmp_path / "shot.png"
    _chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,4000",
        "--hide-scrollbars",
        dumbbell_report.html.as_uri(),
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    px = mpimg.imread(shot)[..., :3].mean(axis=2) * 255  # PNG -> grey levels 0..255
    assert px.shape == (4000, 1280)
    assert px.var() > 200  # text, tables and figures, not a blank page
    assert (px < 128).mean() > 0.01  # enough dark (ink) pixels
    assert (px < 250).mean() < 0.9  # and not an all-dark error page

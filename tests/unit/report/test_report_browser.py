"""The report as a person sees it: headless Chromium renders report.html from a hand-written
experiment, the rendered DOM holds the recommendation, the leaderboard and every plot (loaded,
with its alt text), and a screenshot is taken. Skipped, saying why, where no Chromium is
installed (``.ci/run`` installs Debian's ``chromium`` where apt is available)."""

from __future__ import annotations

import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from adaptlab.report.build import ReportFiles

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PLOTS = (
    "plot-quality-cost",
    "plot-quality-latency",
    "plot-cost-curves",
    "plot-per-class",
    "plot-calibration",
)
# Chromium as the issue asks; a private profile so parallel runs do not share a lock.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")


@pytest.fixture(scope="module")
def browser() -> str:
    """The Chromium binary; found first, so a machine without one skips before building."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip(
        "no Chromium found (looked for chromium, chromium-browser, google-chrome): "
        "apt-get install chromium to run the browser test"
    )


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


class Elements(HTMLParser):
    """Ids of the rendered DOM's elements, and each image's alt text and source kind."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.images: dict[str, tuple[str, str]] = {}
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {key: value or "" for key, value in attrs}
        if "id" in values:
            self.ids.add(values["id"])
        if tag == "img":
            source = values.get("src", "").split(",", 1)[0]  # the data URI's media type
            self.images[values.get("id", "")] = (values.get("alt", ""), source)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_chromium_renders_the_report(
    browser: str, classification_report: ReportFiles, tmp_path: Path
) -> None:
    binary = browser
    url = classification_report.html.resolve().as_uri()
    dom = chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout
    elements = Elements()
    elements.feed(dom)
    text = " ".join(" ".join(elements.text).split())
    assert {"recommendation", "leaderboard", "leaderboard-table"} <= elements.ids
    assert "Recommended: full (confidence:" in text
    assert "zero_shot" in text and "Δ vs best (95% CI)" in text
    for plot in PLOTS:
        alt, source = elements.images[plot]
        assert alt and source == "data:image/png;base64"
    screenshot = tmp_path / "report.png"
    chromium(
        binary, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,2000", url
    )
    assert png_size(screenshot) == (1280, 2000)
    assert screenshot.stat().st_size > 50_000  # a blank page compresses to a few KB

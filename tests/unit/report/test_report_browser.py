"""The report as a person sees it: headless Chromium renders report.html from a hand-written
experiment, the rendered DOM holds the recommendation, the leaderboard and every plot (loaded,
with its alt text), and a screenshot is taken. Skipped, saying why, where no Chromium is
installed (``.ci/run`` installs Debian's ``chromium`` where apt is available).

Layout is measured by a script added to a copy of the report (the report itself has none): it
writes what it measured into the DOM that ``--dump-dom`` prints."""

from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

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
WIDTH = 1280
"""A laptop's browser window: the leaderboard must fit it without sideways scrolling."""
MEASURE = """<script>
window.addEventListener("load", () => {
  const box = document.getElementById("recommendation");
  const element = document.getElementById("leaderboard-table");
  const table = element.getBoundingClientRect();
  const wrapper = element.parentElement;
  const items = [...box.querySelectorAll("li")];
  const folds = [...box.querySelectorAll("details")];
  const measured = {
    viewport: window.innerWidth,
    scrollWidth: document.documentElement.scrollWidth,
    tableLeft: table.left,
    tableRight: table.right,
    // The wrapper may scroll sideways: the page's width alone would not show a table that
    // overflows inside it.
    wrapperScrollWidth: wrapper.scrollWidth,
    wrapperClientWidth: wrapper.clientWidth,
    shown: items.filter((li) => !li.closest("details")).map((li) => li.textContent),
    shownVisible: items.filter((li) => !li.closest("details") && li.checkVisibility()).length,
    folded: items.filter((li) => li.closest("details")).map((li) => li.textContent),
    foldedVisible: items.filter((li) => li.closest("details") && li.checkVisibility())
      .length,
    folds: folds.map((d) => ({open: d.open, summary: d.querySelector("summary").textContent})),
  };
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(measured);
  document.body.appendChild(out);
});
</script>"""


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


def measure(binary: str, report: Path, tmp_path: Path) -> dict[str, Any]:
    """The layout of ``report`` in a window ``WIDTH`` pixels wide, as :data:`MEASURE` saw it."""
    page = tmp_path / "measured.html"
    page.write_text(report.read_text().replace("</body>", f"{MEASURE}</body>"))
    dom = chromium(
        binary,
        tmp_path / "profile",
        f"--window-size={WIDTH},900",
        "--virtual-time-budget=5000",  # let the load event fire before the DOM is dumped
        "--dump-dom",
        page.as_uri(),
    ).stdout
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.DOTALL)
    assert found, "the measuring script did not run"
    measured: dict[str, Any] = json.loads(html.unescape(found.group(1)))
    return measured


@pytest.mark.parametrize("report", ["demo_sized_report", "generative_report"])
def test_the_leaderboard_fits_a_laptop_window(
    browser: str, report: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Ten classification runs (14 columns), and the generative task's 16 columns."""
    files: ReportFiles = request.getfixturevalue(report)
    layout = measure(browser, files.html, tmp_path)
    assert layout["viewport"] == WIDTH
    assert layout["scrollWidth"] <= WIDTH, layout
    assert layout["tableLeft"] >= 0 and layout["tableRight"] <= WIDTH, layout
    assert layout["wrapperScrollWidth"] <= layout["wrapperClientWidth"], layout


def test_the_recommendation_shows_three_reasons_and_folds_the_rest(
    browser: str, demo_sized_report: ReportFiles, tmp_path: Path
) -> None:
    layout = measure(browser, demo_sized_report.html, tmp_path)
    assert 1 <= len(layout["shown"]) <= 3 and layout["shownVisible"] == len(layout["shown"])
    assert all(item.startswith("[") for item in layout["shown"])  # each cites its rule
    (fold,) = layout["folds"]
    assert fold["open"] is False
    assert re.match(r"\d+ more findings?\b", fold["summary"])
    assert layout["folded"] and layout["foldedVisible"] == 0  # closed: nothing of it shows

"""The page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

One generated 10 s song goes through the whole page: dropped on it, separated into two stems by
the bundled model with a progress bar that reaches 100 %, played (every stem's audio element
reports playing), downloaded as a zip whose stems add up to the mixture; then the evaluate view
generates a song and compares two models. Screenshots land in ``out/browser/`` for a person to
look at. Skipped, with the reason, when Chromium or Playwright is missing (``make test``
installs both).
"""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install stemkit[web])")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install stemkit[dev])"
)
uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (the web extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium; make test does it)",
        allow_module_level=True,
    )

SCREENSHOTS = Path(__file__).resolve().parents[2] / "out" / "browser"
RATE = 44100

#: Two stems written as 16-bit wav: each is within half a step (2^-16) of its float value, and
#: the song itself is 16-bit too, so the stems' sum is within 3 · 2^-16 of the decoded mixture.
SUM_TOLERANCE = 3 * 2.0**-16 + 1e-7


def _song(path: Path, seconds: float = 10.0) -> np.ndarray:
    """A 10 s stereo song: the evaluate module's four generated stems, summed; 16-bit wav."""
    from stemkit.web.evaluate import synth_stems

    mixture = np.sum(list(synth_stems(seconds, RATE, seed=3).values()), axis=0)
    sf.write(path, mixture.T, RATE, subtype="PCM_16")
    return sf.read(path, dtype="float32", always_2d=True)[0].T


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from stemkit.web import WebConfig, create_app

    app = create_app(WebConfig(data=tmp_path_factory.mktemp("web-data"), workers=1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--autoplay-policy=no-user-gesture-required", "--no-sandbox"],
        )
        yield browser
        browser.close()


@pytest.fixture()
def page(browser: object, server: str) -> Iterator[object]:
    """A fresh page per test: the tests share the server (its jobs), not the page's state (an
    open player does not open another by itself, so a test must not inherit one)."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server)
    yield page
    context.close()


def test_upload_separate_play_download(page: object, tmp_path: Path) -> None:
    mixture = _song(tmp_path / "my song.wav")
    page.wait_for_selector("#model option[value=default]", state="attached")
    page.select_option("#mode", "vocals")  # two stems: vocals + no_vocals
    page.screenshot(path=str(SCREENSHOTS / "1-start.png"), full_page=True)
    page.set_input_files("#file", str(tmp_path / "my song.wav"))

    bar = page.locator("#jobs li [data-testid=progress]").first
    page.wait_for_function(
        "() => document.querySelector('#jobs li [data-testid=progress]')?.dataset.value === '100'"
    )
    assert bar.get_attribute("data-value") == "100"
    assert "done" in page.locator("#jobs li").first.get_attribute("class")

    page.wait_for_selector("#player:not([hidden]) #stems tr[data-stem=no_vocals]")
    page.wait_for_function(
        "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 3)"
    )
    page.click("#play")
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('audio')];"
        " return a.length === 2 && a.every(e => !e.paused && e.currentTime > 0.2); }"
    )
    playing = page.evaluate(
        "() => [...document.querySelectorAll('audio')].map(a => [a.dataset.stem, !a.paused])"
    )
    assert sorted(playing) == [["no_vocals", True], ["vocals", True]]
    page.click("#stems tr[data-stem=vocals] .solo")
    assert page.evaluate(
        "() => [...document.querySelectorAll('audio')].map(a => a.muted).join()"
    ) in ("false,true", "true,false")
    page.screenshot(path=str(SCREENSHOTS / "2-player.png"), full_page=True)
    page.click("#play")  # pause

    with page.expect_download() as download_info:
        page.click("#zip")
    archive = zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes()))
    names = sorted(Path(name).name for name in archive.namelist())
    assert names == ["no_vocals.wav", "vocals.wav"]
    stems = [
        sf.read(io.BytesIO(archive.read(name)), dtype="float32", always_2d=True)[0].T
        for name in archive.namelist()
    ]
    total = stems[0] + stems[1]
    assert total.shape == mixture.shape
    assert np.abs(total - mixture).max() <= SUM_TOLERANCE


def test_evaluate_compares_two_models(page: object) -> None:
    page.fill("#gen-seconds", "4")
    page.select_option("#model-a", "default")
    page.select_option("#model-b", "identity")
    page.click("#compare")
    page.wait_for_selector("#ab:not([hidden])")
    page.wait_for_selector("#stems tr[data-stem=vocals] .score:has-text('dB')")
    page.click("#ab button[data-side='1']")
    assert page.evaluate(
        "() => [...document.querySelectorAll('audio')]"
        ".filter(a => a.dataset.side === '0').every(a => a.muted)"
    )
    page.screenshot(path=str(SCREENSHOTS / "3-evaluate-ab.png"), full_page=True)

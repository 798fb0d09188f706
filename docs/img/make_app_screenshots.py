"""Screenshots of the app for the docs (docs/img/app_*.png), taken in headless Debian chromium.

    python docs/img/make_app_screenshots.py          # starts app.py on a free port, drives it, writes the PNGs

Each screenshot is downscaled to at most 900 px wide. The inputs are the committed examples.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _save(page, name: str, width: int = 900, **kwargs) -> None:
    raw = OUT / f".{name}.raw.png"
    page.screenshot(path=str(raw), **kwargs)
    image = Image.open(raw)
    if image.width > width:
        image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.convert("RGB").quantize(colors=128).save(OUT / f"{name}.png", optimize=True)
    raw.unlink()


def _upload(page, selector: str, path: Path) -> None:
    page.locator(f"{selector} input[type=file]").set_input_files(str(path))
    page.locator(selector).get_by_text(path.name).first.wait_for(timeout=60_000)


def _answer(page, tab: str) -> None:
    page.wait_for_function(
        "(s) => (document.querySelector(s)?.innerText || '').includes('Most likely')", arg=f"#{tab}-answer",
        timeout=120_000,
    )  # fmt: skip
    time.sleep(1.5)  # plots and images finish drawing


def shoot(url: str, tmp: Path) -> None:
    from playwright.sync_api import sync_playwright

    scan = next(p for p in sorted(EXAMPLES.glob("scan_*.ply")) if "happiness" in p.name)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.goto(url, wait_until="networkidle")
        _upload(page, "#scan-file", scan)
        page.locator("#scan-button").click()
        _answer(page, "scan")
        _save(page, "app_scan", full_page=True)
        page.get_by_text("Where on the face did the answer come from?").click()
        page.locator("#scan-explain-button").click()
        page.wait_for_function("() => document.querySelectorAll('#scan-explain-gallery img').length >= 3",
                               timeout=120_000)  # fmt: skip
        time.sleep(2)
        page.locator("#scan-explain-gallery").scroll_into_view_if_needed()
        _save(page, "app_explanation", clip=page.locator("#scan-explain-gallery").bounding_box() | {"height": 300})
        page.get_by_role("tab", name="4D sequence", exact=True).click()
        page.locator("#tab-sequence").get_by_text("sequence_", exact=False).first.click()
        _answer(page, "sequence")
        _save(page, "app_sequence", full_page=True)
        with zipfile.ZipFile(tmp / "scans.zip", "w") as z:
            for p in sorted(EXAMPLES.glob("scan_*.ply")):
                z.write(p, p.name)
        page.get_by_role("tab", name="Batch").click()
        _upload(page, "#batch-file", tmp / "scans.zip")
        page.locator("#batch-button").click()
        page.locator("#batch-csv").get_by_text(".csv", exact=False).first.wait_for(timeout=120_000)
        time.sleep(1.5)  # the table fades in after its update (a shot at once caught it half-drawn)
        _save(page, "app_batch", full_page=True)
        mobile = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=1)
        mobile.goto(url, wait_until="networkidle")
        _upload(mobile, "#scan-file", scan)
        mobile.locator("#scan-button").click()
        _answer(mobile, "scan")
        _save(mobile, "app_mobile", width=390, full_page=False)
        browser.close()


def main() -> None:
    import tempfile

    port = _port()
    env = {"GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    import os

    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            shoot(url, Path(tmp))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

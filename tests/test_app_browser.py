"""The app in a real headless browser (Debian chromium driven by playwright): upload a scan, see the results."""

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("AFFECTVLM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts"))

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (`apt-get install chromium`; .ci/run does)"
)


@pytest.fixture(scope="module")
def url():
    import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.LAUNCH_KWARGS)
    try:
        yield app.demo.local_url
    finally:
        app.demo.close()


@pytest.fixture(scope="module")
def scan_file(sfm_dir, tmp_path_factory):
    data = np.load(sfm_dir / "sfm_3448.npz")
    path = tmp_path_factory.mktemp("browser") / "surprised_face.obj"
    with open(path, "w") as f:
        f.writelines(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in data["mean"] + data["expressions"][5])
        f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in data["triangles"])
    return path


def test_upload_a_scan_and_see_scores_and_views(url, scan_file):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url, wait_until="networkidle")
            page.get_by_role("tab", name="3D scan").click()
            page.locator("#scan-file").wait_for(state="visible", timeout=60_000)
            # On a loaded machine the tab's components can still be mounting when the file is set, and that
            # file is dropped: set it again (at most 3 times) until the upload shows its name. A file that was
            # taken but is still uploading has replaced the input: then only wait for its name.
            for attempt in range(3):
                file_input = page.locator("#scan-file input[type=file]")
                if file_input.count():
                    file_input.set_input_files(str(scan_file))
                try:
                    page.locator("#scan-file").get_by_text("surprised_face.obj").first.wait_for(timeout=40_000)
                    break
                except sync_api.TimeoutError:
                    if attempt == 2:
                        raise
            page.locator("#scan-button").click()
            gallery_images = page.locator("#views-gallery img")
            gallery_images.nth(2).wait_for(timeout=120_000)
            scores = page.locator("#scores")
            scores.get_by_text("surprise").first.wait_for(timeout=120_000)
            assert gallery_images.count() >= 3
            # The rendered views have arrived and decoded (not just their <img> placeholders).
            page.wait_for_function(
                "() => { const imgs = [...document.querySelectorAll('#views-gallery img')];"
                " return imgs.length >= 3 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
                timeout=60_000,
            )
            text = scores.inner_text()
            assert all(label in text for label in ("anger", "happiness", "surprise"))
            page.screenshot(path=str(ARTIFACTS / "app_scan.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "app_scan.png").stat().st_size > 10_000

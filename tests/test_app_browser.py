"""The app in a real headless browser (Debian chromium driven by playwright): upload a scan and click every
example on every tab, and read the answer the page shows (the predicted label, checked against the truth)."""

import os
import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
from faces import KNOWN_WRONG  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("AFFECTVLM_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian chromium is not installed (`apt-get install chromium`; .ci/run does)",
)


@pytest.fixture(scope="module")
def url(app_url):
    return app_url


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
EMOTIONS = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def truth_of(name: str) -> str:
    return next(e for e in EMOTIONS if e in name)


@pytest.fixture(scope="module")
def playwright():
    """One playwright driver for the module (a second one cannot start in the same thread)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as pw:
        yield pw


def open_page(playwright, url: str, *graphics: str):
    """Debian chromium, offline and quiet, on the app's page: (browser, page). `graphics`: its GPU flags."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", *graphics, "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--disable-quic"],
    )  # fmt: skip
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto(url, wait_until="networkidle")
    return browser, page


@pytest.fixture
def page(playwright, url):
    """A fresh browser for each test, so that no test depends on what an earlier one left in its page."""
    browser, page = open_page(playwright, url, "--disable-gpu")
    try:
        yield page
    finally:
        browser.close()


def answer_of(page, tab: str, timeout: float = 120_000) -> str:
    """The tab's answer line, once it names a label."""
    page.wait_for_function(
        "(sel) => (document.querySelector(sel)?.innerText || '').includes('Most likely')",
        arg=f"#{tab}-answer",
        timeout=timeout,
    )
    return page.locator(f"#{tab}-answer").inner_text()


def click_until_answered(page, tab: str, target) -> str:
    """Click `target` (an example) and read the answer. On a loaded machine a click on a tab that is still
    mounting can be lost: click again (at most 3 times) while no answer has come."""
    target.wait_for(state="visible", timeout=60_000)
    for attempt in range(3):
        target.click()
        try:
            return answer_of(page, tab, timeout=60_000)
        except sync_api.TimeoutError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def label_in(text: str) -> str:
    return text.split("Most likely:")[1].split("(")[0].strip()


def test_upload_a_scan_and_read_the_answer(page):
    path = sorted(EXAMPLES.glob("scan_*.ply"))[1]
    page.get_by_role("tab", name="3D scan").click()
    page.locator("#scan-file").wait_for(state="visible", timeout=60_000)
    _upload(page, "#scan-file", path)
    page.locator("#scan-button").click()
    assert label_in(answer_of(page, "scan")) == truth_of(path.name)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#scan-gallery img')];"
        " return imgs.length >= 3 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=60_000,
    )
    assert truth_of(path.name) in page.locator("#scan-scores").inner_text()
    page.screenshot(path=str(ARTIFACTS / "app_scan.png"), full_page=True)


@pytest.mark.parametrize(
    "tab, name", [("scan", "3D scan"), ("views", "Three views"), ("sequence", "4D sequence")]
)
def test_clicking_each_example_answers_in_its_own_tab(page, url, tab, name):
    pattern = {"scan": "scan_*.ply", "views": "views_*_frontal.png", "sequence": "sequence_*.zip"}[tab]
    for i, example in enumerate(sorted(EXAMPLES.glob(pattern))):
        page.goto(url, wait_until="networkidle")  # a fresh page: no answer on any tab
        page.get_by_role("tab", name=name, exact=True).click()
        panel = page.locator(f"#tab-{tab}")
        if tab == "views":  # image rows: the i-th (the app lists the view sets sorted, as here)
            target = panel.get_by_text("anger, disgust", exact=False).nth(i)
        else:
            target = panel.get_by_text(example.name, exact=False).first
        label = label_in(click_until_answered(page, tab, target))
        if example.stem in KNOWN_WRONG:  # a known wrong answer of the model (tests/faces.py)
            continue
        assert label == truth_of(example.name), example.name
        for other in {"scan", "views", "sequence"} - {tab}:  # each tab has its own outputs (if it is mounted)
            text = page.evaluate(f"() => document.querySelector('#{other}-answer')?.innerText || ''")
            assert "Most likely" not in text
    page.screenshot(path=str(ARTIFACTS / f"app_{tab}_examples.png"), full_page=True)


def _upload(page, selector: str, path: Path, shown: str | None = None) -> None:
    """Set a file input, again while the component is still mounting (at most 3 times), until the upload
    shows: its name, or what `shown` (a selector inside the component, e.g. "img") finds. On a loaded machine
    the tab's components can still be mounting when the file is set, and that file is dropped.

    The name is looked for where the uploaded file stays: gradio lists it as a cell labelled with the whole
    name, whose text is the stem and the extension in two elements ("scan .ply" to a text match). Matching
    the text alone caught only the upload's progress line, which shows the name whole for as long as the
    upload takes: a fast upload could come and go before the page was looked at."""
    for attempt in range(3):
        file_input = page.locator(f"{selector} input[type=file]")
        if file_input.count():
            file_input.set_input_files(str(path))
        try:
            component = page.locator(selector)
            by_name = component.locator(f'[aria-label="{path.name}"]').or_(component.get_by_text(path.name))
            found = page.locator(f"{selector} {shown}") if shown else by_name
            found.first.wait_for(timeout=40_000)
            return
        except sync_api.TimeoutError:
            if attempt == 2:
                raise


def test_uploaded_views_show_as_images_and_a_non_image_gets_its_message(page, url, tmp_path):
    """The views go to the predictor as the uploaded files (app.ViewImage): a file that is no image gets the
    predictor's message on the page (gr.Image's own reading failed on it before the app's code, with a generic
    error), and uploads still show as image previews and are scored."""
    not_image = tmp_path / "readme.png"
    not_image.write_text("# Not an image\n")
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Three views", exact=True).click()
    _upload(page, "#views-frontal", not_image, shown="img")
    page.locator("#views-button").click()
    page.get_by_text("frontal view: readme.png is not an image file that can be read").first.wait_for(
        timeout=60_000
    )
    assert "Most likely" not in page.locator("#views-answer").inner_text()

    page.goto(url, wait_until="networkidle")  # the app still serves: three uploads, previewed and scored
    page.get_by_role("tab", name="Three views", exact=True).click()
    for view in ("frontal", "left", "right"):
        _upload(page, f"#views-{view}", EXAMPLES / f"views_subject1_disgust_{view}.png", shown="img")
    page.wait_for_function(
        "() => ['frontal', 'left', 'right'].every(v => { const i = document.querySelector(`#views-${v} img`);"
        " return i && i.complete && i.naturalWidth > 0; })",
        timeout=60_000,
    )
    page.locator("#views-button").click()
    assert label_in(answer_of(page, "views")) == "disgust"
    page.screenshot(path=str(ARTIFACTS / "app_views_uploaded.png"), full_page=True)


def test_action_units_and_the_explanation_show_for_a_scan(page, url):
    """The AU chart beside the scores, then the explanation: overlays on the three views and the painted scan."""
    path = next(p for p in sorted(EXAMPLES.glob("scan_*.ply")) if "happiness" in p.name)
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="3D scan").click()
    _upload(page, "#scan-file", path)
    page.locator("#scan-button").click()
    assert label_in(answer_of(page, "scan")) == "happiness"
    # the AU chart is drawn (its bars and AU names are in the image; tests/test_answers_v2.py checks the values)
    page.wait_for_function(
        "() => { const img = document.querySelector('#scan-aus img');"
        " return img && img.complete && img.naturalWidth > 200; }",
        timeout=60_000,
    )
    assert "**" not in page.locator("#scan-vocabulary").inner_text()  # rendered markdown
    page.get_by_text("Where on the face did the answer come from?").click()
    page.locator("#scan-explain-button").click()
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('#scan-explain-gallery img')];"
        " return imgs.length >= 3 && imgs.every(i => i.complete && i.naturalWidth > 0); }",
        timeout=120_000,
    )
    assert "where 'happiness' came from" in page.locator("#scan-explain-gallery").inner_text()
    page.screenshot(path=str(ARTIFACTS / "app_scan_explained.png"), full_page=True)


def test_batch_tab_scores_a_zip_and_offers_the_csv(page, url, tmp_path):
    import zipfile

    scans = sorted(EXAMPLES.glob("scan_*.ply"))
    with zipfile.ZipFile(tmp_path / "scans.zip", "w") as z:
        for p in scans:
            z.write(p, p.name)
    page.goto(url, wait_until="networkidle")
    page.get_by_role("tab", name="Batch").click()
    _upload(page, "#batch-file", tmp_path / "scans.zip")
    page.locator("#batch-button").click()
    page.locator("#batch-csv").get_by_text(".csv", exact=False).first.wait_for(timeout=120_000)
    table = page.locator("#batch-table").inner_text()
    for p in scans:
        assert p.name in table
    with page.expect_download() as download:
        page.locator("#batch-csv a").first.click()
    text = Path(download.value.path()).read_text()
    assert text.startswith("file,label,") and all(p.name in text for p in scans)
    page.screenshot(path=str(ARTIFACTS / "app_batch.png"), full_page=True)


def test_the_3d_preview_draws_the_scan(playwright, url):
    """The 3D scan tab's preview (a WebGL canvas; software GL here, no GPU) draws the scan the model scored,
    filling much of the canvas around its middle: not an empty canvas. (The viewer frames whatever it is given,
    so what the preview holds is checked in tests/test_app.py, not from its pixels.) Its own browser: the
    preview's render loop keeps a software GL busy, which the other tests' browser need not pay for."""
    import numpy as np
    from PIL import Image

    path = next(p for p in sorted(EXAMPLES.glob("scan_*.ply")) if "happiness" in p.name)
    browser, page = open_page(playwright, url, "--use-angle=swiftshader", "--enable-unsafe-swiftshader")
    try:
        for attempt in range(3):  # a click on a tab that is still mounting can be lost (a loaded machine)
            page.get_by_role("tab", name="3D scan").click()
            try:
                page.locator("#scan-file input[type=file]").wait_for(state="attached", timeout=20_000)
                break
            except sync_api.TimeoutError:
                if attempt == 2:
                    raise
        _upload(page, "#scan-file", path)
        page.locator("#scan-button").click()
        assert label_in(answer_of(page, "scan")) == "happiness"
        canvas = page.locator("#scan-preview canvas").first
        canvas.wait_for(state="visible", timeout=60_000)
        shot = ARTIFACTS / "app_scan_preview.png"
        for _ in range(20):  # the mesh arrives after the canvas: until something is drawn (at most ~20 s)
            page.wait_for_timeout(1_000)
            canvas.screenshot(path=str(shot))
            rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
            colours, counts = np.unique(rgb.reshape(-1, 3), axis=0, return_counts=True)
            # the skin-coloured scan: off the background (the commonest colour) and not the grey of the
            # label and buttons drawn over the canvas
            drawn = (np.abs(rgb - colours[counts.argmax()]).sum(-1) > 30) & (np.ptp(rgb, axis=-1) > 15)
            if drawn.mean() > 0.05:
                break
    finally:
        browser.close()
    rows, cols = np.nonzero(drawn)
    assert 0.05 < drawn.mean() < 0.9, f"drawn fraction {drawn.mean():.3f}: see {shot}"
    h, w = drawn.shape
    assert np.ptp(rows) > 0.4 * h, f"the face spans {np.ptp(rows) / h:.2f} of the canvas height: see {shot}"
    assert abs(cols.mean() / w - 0.5) < 0.2, f"the face's centre is at {cols.mean() / w:.2f} of the width"

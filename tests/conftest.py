import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The suite runs in several processes (pytest-xdist; `-n auto` in pyproject.toml, at most MAX_WORKERS). Each
# worker takes its share of the cores for torch (and the interpreters its tests start inherit it), and its own
# gradio folder: a closed app deletes the example files it cached there, which another worker's app still serves.
MAX_WORKERS = 4
_OWN_GRADIO_DIR = None  # the worker's gradio folder, made here and removed when the worker ends
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))
    if "GRADIO_TEMP_DIR" not in os.environ:
        _OWN_GRADIO_DIR = tempfile.mkdtemp(prefix=f"gradio-{os.environ['PYTEST_XDIST_WORKER']}-")
        os.environ["GRADIO_TEMP_DIR"] = _OWN_GRADIO_DIR


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core, at most MAX_WORKERS (each may start the app and load both checkpoints)."""
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def pytest_unconfigure(config) -> None:
    if _OWN_GRADIO_DIR:
        shutil.rmtree(_OWN_GRADIO_DIR, ignore_errors=True)

SFM_HOW_TO = (
    "this test needs the Surrey Face Model (non-commercial use only). Get it with "
    "`python -m affectvlm.data sfm --download --dir DIR` (or `python -m affectvlm.data sfm-convert SRC --out DIR` "
    "on the eos files downloaded by hand), then `export AFFECTVLM_SFM_DIR=DIR`: docs/data.md, 'The face model'"
)


def sfm_folder() -> Path:
    """$AFFECTVLM_SFM_DIR when set (even to a folder that does not exist), else ../shared/sfm beside the checkout."""
    configured = os.environ.get("AFFECTVLM_SFM_DIR")
    return Path(configured).expanduser() if configured else ROOT.parent / "shared" / "sfm"


@pytest.fixture(scope="session")
def sfm_dir() -> Path:
    """The Surrey Face Model folder (holding sfm_3448.npz); the test is skipped, saying how to get it, without.

    Tests that only need "a face" use `affectvlm.testing.face_mesh` or `toy_face_model` instead.
    """
    path = sfm_folder()
    if not (path / "sfm_3448.npz").is_file():
        pytest.skip(f"no sfm_3448.npz in {path}: {SFM_HOW_TO}")
    return path


@pytest.fixture(scope="session")
def app_url() -> str:
    """The app, launched once for the whole session on a free loopback port, with a 2 MB upload limit (so the
    oversized-upload test is cheap). Once: a closed demo deletes the example files gradio cached when the app
    was built, so a relaunched one would fail on its examples."""
    pytest.importorskip("gradio")
    import socket

    import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kwargs = dict(app.LAUNCH_KWARGS, max_file_size="2mb")
    app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        yield app.demo.local_url
    finally:
        app.demo.close()

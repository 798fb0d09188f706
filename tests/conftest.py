import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def sfm_dir() -> Path:
    """The Surrey Face Model folder: $AFFECTVLM_SFM_DIR, else ../shared/sfm beside the checkout."""
    path = Path(os.environ.get("AFFECTVLM_SFM_DIR", ROOT.parent / "shared" / "sfm"))
    if not (path / "sfm_3448.npz").is_file():
        pytest.fail(f"Surrey Face Model not found in {path}: set AFFECTVLM_SFM_DIR")
    return path

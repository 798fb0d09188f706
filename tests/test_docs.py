"""What the README and docs/*.md tell a user to run works as written, and the set-up they describe agrees
with the requirements files, pyproject.toml, .ci/run and the Space.

Every shell command of README.md and docs/*.md (```bash blocks and 4-space indented blocks; one command per
logical line, comments dropped) is either run here and must exit 0, or matches a rule of `SKIPPED`, which
says why it is not run (it trains, needs a licensed dataset, the Surrey Face Model, a GPU, the network...).
A new command in the docs is therefore run unless a rule says otherwise. The commands run in a scratch
folder that links the repository's top-level entries (so `train/train.py`, `checkpoints/...` resolve) and
holds the inputs they name (`face.obj`, `face.ply`, `F001/Happy/`, `000.wrl`..., written from the procedural
face; `~/Downloads/eos-share/` holds fake eos model files); `/tmp/` and `~/` in a command become the scratch
folder's `tmp/` and `home/`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from affectvlm.predictor import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}

# (pattern searched in the command, why it is not run); the first match wins, anything unmatched is run.
SKIPPED = (
    (r"\bpip install\b|python -m venv|python app\.py",
     "installs packages or serves the app (the README set-up: .ci/run runs it; test_hub.py the Space's venv)"),
    (r"python -m pytest", "the test suite itself"),
    (r"refresh_remote_code|^cp .* checkpoints/", "rewrites the repository's demo checkpoint in place"),
    (r"sfm --download", "downloads the Surrey Face Model (network; tests/test_data_sfm.py runs it on fake files)"),
    (r"git clone|affectvlm\.data ict\b",
     "clones a repository (network) or reads the ICT FaceKit: tests/test_data_ict.py, test_facshuman.py fake both"),
    (r"--machine_rank", "one of several machines (or shells) that run together"),
    (r"--multi_gpu|--device cuda|bench/gpu\.sh|bench/gpu_paper\.py(?! --help)|--mixed-precision bf16", "needs GPUs"),
    (r"--root /data|--dataset (bu3dfe|bosphorus|bu4dfe|bp4d)\b|--prepare bu3dfe",
     "needs a licensed real dataset (BU-3DFE, Bosphorus, BU-4DFE, BP4D)"),
    (r"--dataset synth|--prepare-synth|bench/synth\.py",
     "generates SynthFER-3D: needs the Surrey Face Model and minutes (tests/test_data_cache.py covers it)"),
    (r"<hash>|\.\.\.|\$C\b|\$V\b|/tmp/avlm|\bruns/",
     "reads the output of an earlier long command (a render cache, a training or cross-validation run)"),
    (r"train/(train|cross_validate|launch|ablate)\.py(?! --help)|accelerate launch|bench/train\.py",
     "trains: seconds to hours (tests/test_train.py and tests/test_train_cv.py run the tiny configs)"),
    (r"train/evaluate\.py(?! --help)", "scores a trained run on a render cache (tests/test_evaluate.py runs it)"),
    (r"train/text_subspace\.py(?! --help)",
     "restricts a trained run's text projection (tests/test_text_subspace.py runs it)"),
    (r"train/text_swap\.py(?! --help)",
     "fits a new text encoder onto a trained run (tests/test_text_swap.py runs it)"),
    (r"train/text_anchors\.py(?! --help)",
     "writes text anchors into a trained run (tests/test_text_anchors.py runs it)"),
    (r"train/average\.py(?! --help)", "averages trained runs' weights (tests/test_average.py runs it)"),
    (r"train/companion\.py(?! --help)",
     "fits or scores a companion on two renders of a cache (tests/test_companion.py runs it)"),
    (r"train/familiarity\.py(?! --help)",
     "scores 500 synthetic validation scans: both face models and minutes (tests/test_familiarity.py runs it)"),
    (r"train/shape_oracle\.py(?! --help)",
     "generates 1,600 identities' faces from both face models: a minute (tests/test_shape_oracle.py runs its parts)"),
    (r"train/facshuman\.py(?! --help)",
     "needs clones of MakeHuman and FACSHuman (network; tests/test_facshuman.py runs it on a tree made from the SFM)"),
    (r"hub/(push|space)\.py(?!.*--dry-run)", "uploads to the Hugging Face Hub (needs a token and the network)"),
)  # fmt: skip


def _shell_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, body) of each shell code block: fenced with a shell language, or indented."""
    blocks, fenced = [], re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
    for m in fenced.finditer(text):
        if m.group(1) in SHELL_LANGUAGES:
            blocks.append((text.count("\n", 0, m.start(2)) + 1, m.group(2)))
    # indented blocks: outside fences (blanked out, keeping line numbers), after a blank line
    rest = fenced.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    for m in re.finditer(r"(?:^|\n\n)((?: {4}\S.*\n)+)", rest):
        blocks.append((rest.count("\n", 0, m.start(1)) + 1, re.sub(r"(?m)^ {4}", "", m.group(1))))
    return blocks


def _commands(body: str) -> list[tuple[int, str]]:
    """(line offset in the block, command) per logical line: continuations joined, comments dropped."""
    out, offset = [], 0
    for logical in re.split(r"(?<!\\)\n", body):
        line = re.sub(r"\s+#\s.*$", "", re.sub(r"\\\n\s*", " ", logical)).strip()
        if line and not line.startswith("#"):
            out.append((offset, " ".join(line.split())))
        offset += logical.count("\n") + 1
    return out


def documented_commands() -> dict[str, list[str]]:
    """command -> where it is documented ("README.md:66", ...), in order of first appearance."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for line_no, body in _shell_blocks(path.read_text(encoding="utf-8")):
            for offset, command in _commands(body):
                found.setdefault(command, []).append(f"{path.relative_to(ROOT)}:{line_no + offset}")
    return found


def skip_reason(command: str) -> str | None:
    return next((why for pattern, why in SKIPPED if re.search(pattern, command)), None)


COMMANDS = documented_commands()
TO_RUN = [c for c in COMMANDS if skip_reason(c) is None]


def _write_inputs(folder: Path) -> None:
    """The scans the documented commands name, from the procedural face, and eos files "downloaded by hand"."""
    from affectvlm.scan import write_obj, write_ply, write_wrl
    from affectvlm.testing import face_mesh, fake_sfm_files

    (folder / "home" / "Downloads" / "eos-share").mkdir(parents=True)
    for name, data in fake_sfm_files().items():
        (folder / "home" / "Downloads" / "eos-share" / name).write_bytes(data)
    write_obj(folder / "face.obj", face_mesh())
    write_ply(folder / "face.ply", face_mesh())
    (folder / "F001" / "Happy").mkdir(parents=True)
    for i, w in enumerate((0.0, 0.5, 1.0)):
        write_wrl(folder / "F001" / "Happy" / f"{i:03d}.wrl", face_mesh("happiness", w))
        write_wrl(folder / f"{i:03d}.wrl", face_mesh("surprise", w))


def _run(command: str, folder: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
    }  # fmt: skip
    command = command.replace("/tmp/", f"{folder}/tmp/").replace("~/", f"{folder}/home/")
    return subprocess.run(
        ["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every runnable command's result; two at a time (each is mostly a Python start-up)."""
    folder = tmp_path_factory.mktemp("docs")
    for entry in ROOT.iterdir():
        if entry.name == "checkpoints":  # a copy: no documented command may change the repository's
            shutil.copytree(entry, folder / entry.name)
        elif not entry.name.startswith("."):
            (folder / entry.name).symlink_to(entry)
    (folder / "tmp").mkdir()
    _write_inputs(folder)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(TO_RUN, pool.map(lambda c: _run(c, folder), TO_RUN)))


@pytest.mark.parametrize("command", list(COMMANDS), ids=[COMMANDS[c][0] for c in COMMANDS])
def test_documented_command_runs_as_written(command, results):
    reason = skip_reason(command)
    if reason is not None:
        pytest.skip(f"{reason}: {command}")
    proc = results[command]
    assert proc.returncode == 0, (
        f"{command!r} ({', '.join(COMMANDS[command])}) exited {proc.returncode}:\n"
        f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    )


def test_the_extraction_finds_the_commands():
    assert any(c.startswith("python -m affectvlm render ") for c in TO_RUN)
    assert any(c.startswith("python -m affectvlm.data folds --cache") for c in COMMANDS)  # an indented block
    assert not any("\\" in c or c.startswith("#") for c in COMMANDS)
    assert len(TO_RUN) >= 8


# --- the set-up the README describes --------------------------------------------------------------------


def _setup_commands() -> list[str]:
    """The README's set-up section: its shell blocks, each one command."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Set-up.*?(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Set-up' section"
    return [c for _, body in _shell_blocks(section.group(0)) for _, c in _commands(body)]


def test_readme_setup_is_two_commands_and_ci_runs_the_test_command():
    start_app, run_tests = _setup_commands()  # exactly two
    assert start_app == "pip install torch==2.13.0 && pip install -r requirements.txt && python app.py"
    assert run_tests.endswith("python -m pytest -q") and "requirements-test.txt" in run_tests
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-1] == run_tests, ".ci/run must end with exactly the README's test command"
    torch_at = next(i for i, line in enumerate(ci) if "pip install" in line and "torch==2.13.0" in line)
    runtime_at = next(
        i for i, line in enumerate(ci) if "pip install" in line and "-r requirements.txt" in line
    )
    assert torch_at < runtime_at < len(ci) - 1


def read_requirements(name: str) -> dict[str, str]:
    """A requirements file's own lines (not those of the files it includes with -r): name -> requirement."""
    from hub.space import _dist_name

    out = {}
    for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            out[_dist_name(line)] = line
    return out


def _pyproject_group(requirements: list[str]) -> dict[str, str]:
    from hub.space import _dist_name

    return {_dist_name(r): r for r in requirements}


def test_requirements_files_split_run_time_training_and_test_tools_as_pyproject_does():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    runtime = read_requirements("requirements.txt")
    expected = _pyproject_group(project["dependencies"] + extras["app"])
    assert runtime.keys() == expected.keys()
    assert runtime.pop("torch") == "torch==2.13.0"  # the pin; pyproject gives the range the library supports
    assert all(runtime[name] == expected[name] for name in runtime)
    assert read_requirements("requirements-train.txt") == _pyproject_group(extras["train"])
    assert read_requirements("requirements-test.txt") == _pyproject_group(extras["test"])
    assert not {"pytest", "ruff", "playwright", "accelerate"} & runtime.keys()
    includes = {
        name: (ROOT / name).read_text() for name in ("requirements-train.txt", "requirements-test.txt")
    }
    assert "-r requirements.txt" in includes["requirements-train.txt"]
    assert "-r requirements-train.txt" in includes["requirements-test.txt"]


def test_space_requirements_are_requirements_txt_with_gradio_pinned():
    from hub.space import load_space_settings, space_requirements

    settings = load_space_settings()
    space = [line for line in space_requirements(settings).splitlines() if not line.startswith("#")]
    gradio = f"gradio=={settings['sdk_version']}"
    expected = [
        gradio if name == "gradio" else req for name, req in read_requirements("requirements.txt").items()
    ]
    assert space == expected


def test_space_licence_is_the_served_checkpoints():
    settings = yaml.safe_load((ROOT / "space.yaml").read_text())
    card = (ROOT / "checkpoints" / DEFAULT_MODEL / "README.md").read_text()
    front = yaml.safe_load(re.match(r"---\n(.*?)\n---\n", card, re.S).group(1))
    assert (settings["license"], settings["license_name"]) == (front["license"], front["license_name"])
    assert settings["license_link"].startswith("https://")


def test_gradio_cache_is_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".gradio/" in ignored

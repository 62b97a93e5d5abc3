"""The Makefile's setup in a second clone of the repository: the shared venv (keyed by the lock's hash) is already
installed, so nothing is installed again and no clone re-points it; a changed lock is installed. The venv's
`lakescore` command runs the checkout it is called from, not the clone that made the venv.

make runs for real with stand-in tools: PYTHON_BASE is a script whose `-m venv DIR` makes DIR/bin/{pip,python}
that only log their arguments, so every command `make setup` would run on a real venv is in the log, and nothing
touches the shared venv (VENV, JARS_DIR and MOTO_VENV point into tmp_path)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# What the setup targets read from the working tree: copied over each clone, so the test checks this tree's files
# and not only its last commit.
SETUP_FILES = ["Makefile", "requirements.lock", "tests/moto.lock", "pyproject.toml", "jobs/console.sh"]

LOGGER = """#!/bin/bash
echo "$(basename "$0") $*" >> "$FAKE_LOG"
"""
BASE = """#!/bin/bash
echo "python-base $*" >> "$FAKE_LOG"
if [ "$1" = -m ] && [ "$2" = venv ]; then
    mkdir -p "$3/bin"
    for tool in pip python; do cp "$FAKE_LOGGER" "$3/bin/$tool"; done
fi
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make, git")


def clone(dst: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True, capture_output=True)
    for f in SETUP_FILES:
        shutil.copy(ROOT / f, dst / f)
    return dst


@pytest.fixture
def tools(tmp_path) -> tuple[dict[str, str], list[str]]:
    """The environment for `make`: stand-in python, and VENV, JARS_DIR, MOTO_VENV under tmp_path."""
    bin_dir = tmp_path / "tools"
    bin_dir.mkdir()
    (bin_dir / "logger").write_text(LOGGER)
    (bin_dir / "python-base").write_text(BASE)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    jars = tmp_path / "jars"
    jars.mkdir()
    (jars / "jars.txt").write_text("fetched before\n")  # the jars are not what this test is about
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    return {**env, "FAKE_LOG": str(tmp_path / "log"), "FAKE_LOGGER": str(bin_dir / "logger")}, [
        f"PYTHON_BASE={bin_dir / 'python-base'}", f"VENV={tmp_path / 'venv'}", f"JARS_DIR={jars}",
        f"MOTO_VENV={tmp_path / 'moto'}"]


def make(repo: Path, tools, *args: str) -> str:
    env, settings = tools
    out = subprocess.run(["make", "-s", *args, *settings], cwd=repo, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def logged(tools) -> list[str]:
    log = Path(tools[0]["FAKE_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def test_a_second_clone_installs_nothing_into_the_shared_venv_and_a_changed_lock_does(tmp_path, tools):
    first = clone(tmp_path / "first")
    make(first, tools, "setup")
    done = logged(tools)
    assert any(line.startswith("python-base -m venv") for line in done)
    assert "pip install -q -r requirements.lock" in done and "pip install -q -r tests/moto.lock" in done

    second = clone(tmp_path / "second")  # every file newer than the venv's stamps, as in any fresh clone or copy
    planned = make(second, tools, "-n", "setup")
    assert "pip" not in planned and "venv" not in planned, planned
    make(second, tools, "setup")
    assert logged(tools) == done  # nothing ran: no venv, no pip
    assert not any(line.startswith("pip install") and " -e " in line for line in done)  # nothing clone-bound

    with open(second / "requirements.lock", "a") as fh:
        fh.write("# a changed lock\n")
    planned = make(second, tools, "-n", "setup")
    assert "pip install -q -r requirements.lock" in planned
    assert "tests/moto.lock" not in planned  # moto's lock did not change


def console(tmp_path) -> Path:
    """jobs/console.sh installed as a venv's `lakescore`, beside a `python` that is this test's interpreter."""
    bin_dir = tmp_path / "venv-bin"
    bin_dir.mkdir()
    shutil.copy(ROOT / "jobs" / "console.sh", bin_dir / "lakescore")
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return bin_dir / "lakescore"


def test_the_lakescore_command_runs_the_checkout_it_is_called_from(tmp_path):
    lakescore = console(tmp_path)
    checkout = clone(tmp_path / "clone")
    (checkout / "jobs" / "cli.py").write_text("import sys\n\ndef main():\n    print('cli of', __file__)\n"
                                              "    return 0\n\nif __name__ == '__main__':\n    sys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    here = subprocess.run([str(lakescore)], cwd=checkout, env=env, capture_output=True, text=True, timeout=60)
    assert here.returncode == 0 and here.stdout.strip() == f"cli of {checkout / 'jobs' / 'cli.py'}", here.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    via_path = subprocess.run([str(lakescore)], cwd=elsewhere, env={**env, "PYTHONPATH": str(checkout)},
                              capture_output=True, text=True, timeout=60)
    assert via_path.returncode == 0 and via_path.stdout.strip() == here.stdout.strip(), via_path.stderr
    none = subprocess.run([str(lakescore), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=60)
    assert none.returncode == 2 and none.stdout == ""
    assert none.stderr.strip().splitlines() == [
        f"lakescore: no lakescore checkout in {elsewhere} and PYTHONPATH is unset; run it inside a clone, in "
        "`make shell`, or with PYTHONPATH=<clone>"]

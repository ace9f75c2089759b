"""The installed commands: ``pip install .`` puts fbnet-* on the PATH, each running the same main()
as python tools/<name>.py, from any folder (not only a clone)."""

import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

COMMANDS = re.findall(r'\("(fbnet-[a-z-]+)", "([a-z_]+)"\)', open(os.path.join(ROOT, "setup.py")).read())


def test_every_command_names_a_tool_with_a_main():
    assert len(COMMANDS) == 9
    for _, module in COMMANDS:
        assert re.search(r"^def main\(argv=None", open(os.path.join(ROOT, "tools", module + ".py")).read(), re.M)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A non-editable ``pip install .`` (the project only: its dependencies are this environment's)."""
    target = tmp_path_factory.mktemp("installed")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
    done = subprocess.run([*cmd, ROOT], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return target


def test_installed_commands_run_outside_the_clone(installed, tmp_path):
    assert sorted(os.listdir(installed / "bin")) == sorted(c for c, _ in COMMANDS)
    command = "fbnet-search"  # one run: each start imports torch (the others differ only by module name)
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [os.path.join(installed, "bin", command), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {command}")
    where = subprocess.run(
        [sys.executable, "-c", "import mobile_cv.tools.search as s; print(s.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert where.stdout.strip().startswith(str(installed))  # the installed copy, not the clone's

"""mobile_cv.atomic_files: the one writer every project file goes through."""

import ast
import json
import os
import pathlib

import pytest

from mobile_cv.atomic_files import (
    TEMPORARY_GLOB,
    atomic_copy,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temporaries,
    staging_folder,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_writes_and_replaces_whole_files(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_json(str(path), {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    atomic_write_text(str(path), "new\n")
    assert path.read_text() == "new\n"
    atomic_write_bytes(str(tmp_path / "b.bin"), b"\x00\x01")
    atomic_copy(str(tmp_path / "b.bin"), str(tmp_path / "c.bin"))
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "c.bin", "sub"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "state.pth"
    path.write_bytes(b"old")

    def half(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), half)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state.pth"]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_during_a_write_takes_effect_once_the_file_is_written(tmp_path, sig):
    """A signal that arrives mid-write (a checkpoint's torch.save) is held: the file is written whole,
    then the signal reaches the handler it had (Ctrl-C: KeyboardInterrupt), and the handlers are back."""
    import signal

    import torch

    sig = getattr(signal, sig)
    path, seen = tmp_path / "checkpoint.pth", []

    class Stop(BaseException):
        pass

    def handler(signum, frame):
        seen.append(signum)
        raise Stop()

    def save_with_a_signal_in_the_middle(f):
        f.write(b"")  # the writer has begun; the signal comes, then the checkpoint is saved
        signal.raise_signal(sig)
        torch.save({"a": torch.arange(1000), "b": torch.ones(3)}, f)

    before = signal.signal(sig, handler)
    try:
        with pytest.raises(Stop):
            atomic_write(str(path), save_with_a_signal_in_the_middle)
        assert seen == [sig] and signal.getsignal(sig) is handler
    finally:
        signal.signal(sig, before)
    loaded = torch.load(path, weights_only=True)
    assert loaded["a"].tolist() == list(range(1000)) and loaded["b"].tolist() == [1.0, 1.0, 1.0]
    assert os.listdir(tmp_path) == ["checkpoint.pth"]


def test_the_clean_up_knows_every_temporary_name(tmp_path):
    # what a killed writer leaves: a temporary file, a staging folder; the user's own files stay
    (tmp_path / ".eval.json.k2j4.tmp").write_text("{")
    staging = staging_folder(str(tmp_path / "model"))
    assert pathlib.Path(staging).match(TEMPORARY_GLOB)
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / "eval.json").write_text("{}")
    removed = remove_stale_temporaries(str(tmp_path))
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == ["eval.json", "notes.tmp"]


def _writes_a_file(node: ast.Call) -> bool:
    func = ast.unparse(node.func)
    if func == "open":  # "w"/"x" modes; "a" is an append-only log stream (log.txt), not a file written whole
        modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
        modes += [k.value.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
        return any(isinstance(m, str) and ("w" in m or "x" in m) for m in modes)
    if func.endswith(("savefig", "torch.save", "jit.save", "export.save")) and not func.startswith("safetensors"):
        # (safetensors.torch.save returns bytes) into the file object atomic_write hands over or a
        # buffer in memory, never straight to a path
        target = node.args[-1] if func.endswith("save") else node.args[0]
        return not (isinstance(target, ast.Name) and target.id in ("f", "buffer"))
    return func.endswith(("copyfile", "copy2", ".write_text", ".write_bytes"))


def test_no_file_of_the_project_is_opened_for_writing_outside_the_writer():
    """Every write goes through mobile_cv.atomic_files (the bundle's standalone runner restates it;
    a model folder's files are written inside its staging folder, which moves as a whole)."""
    allowed = {"mobile_cv/atomic_files.py", "mobile_cv/latency/bundle_runner.py", "model_zoo/folder.py"}
    allowed |= {"model_zoo/hub.py"}  # downloads: a per-process staging folder in a shared cache
    offenders = []
    for folder in ("mobile_cv", "model_zoo", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in allowed:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and _writes_a_file(node):
                    offenders.append(f"{rel}:{node.lineno} {ast.unparse(node.func)}")
    assert offenders == [], "\n".join(offenders)

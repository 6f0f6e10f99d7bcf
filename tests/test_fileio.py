"""The package's one atomic writer: complete-or-absent files, readable modes, stale temporaries cleared."""

import os
import stat

import pytest
import torch

from hiera_video.fileio import atomic_save, atomic_write, atomic_write_text, did_you_mean, remove_stale_temps


def test_atomic_write_replaces_whole_file_with_umask_mode(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "old")
    old_mask = os.umask(0o022)
    try:
        atomic_write_text(target, "new")
    finally:
        os.umask(old_mask)
    assert target.read_text() == "new"
    # mkstemp alone would give 0600; a group sharing the run folder must be able to read it
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.pt"
    atomic_save({"x": torch.ones(2)}, target)

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, boom)
    assert torch.equal(torch.load(target, weights_only=True)["x"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]


def test_remove_stale_temps_only_touches_named_temporaries(tmp_path):
    (tmp_path / ".last.pt.abc.tmp").write_bytes(b"x")
    (tmp_path / ".ckpt_1.pt.def.tmp").write_bytes(b"x")
    (tmp_path / "keep.tmp").write_bytes(b"x")  # not a hidden temporary of ours
    (tmp_path / "last.pt").write_bytes(b"x")
    removed = remove_stale_temps(tmp_path, names=["last.pt"])
    assert [p.name for p in removed] == [".last.pt.abc.tmp"]
    removed = remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".ckpt_1.pt.def.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp", "last.pt"]


def test_did_you_mean():
    assert did_you_mean("nm_frames", ["num_frames", "crop_size"]) == " (did you mean 'num_frames'?)"
    assert did_you_mean("zzz", ["num_frames"]) == ""

"""Regression tests for the defects an adversarial probe found (issue 13: 1, 2, 5, 6, 8, 9, 11, 12).

Each test names its defect. The runs are tiny (a few optimizer steps of the demo model on a dozen 8-frame
clips), so the file runs in well under a minute on two cores.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from hiera_video.cli import main
from hiera_video.config import ConfigError, apply_overrides, demo_config, validate
from hiera_video.data import make_motion_dataset
from hiera_video.engine import build
from hiera_video.engine.checkpoint import CheckpointError, load_checkpoint, resolve_resume
from hiera_video.engine.loop import TrainingDiverged
from hiera_video.engine.train import train

MAE_MODEL = ("{embed_dim: 32, num_heads: 1, depths: [1, 1, 2, 1], decoder_embed_dim: 32, decoder_depth: 1, "
             "decoder_num_heads: 1}")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("motion")
    make_motion_dataset(root, num_videos_per_class={"train": 2, "val": 1}, num_frames=8, size=(32, 32), fps=8)
    return root


def tiny(root: Path, out: Path, name: str, *extra: str):
    """The demo recipe on the 8-video set: 2 steps per epoch."""
    return apply_overrides(demo_config(), [
        f"data.root={root}", "data.synthetic=null", f"run.output_dir={out}", f"run.name={name}",
        "data.batch_size=4", "train.epochs=1", "optim.warmup_epochs=0", "train.progress=false",
        "train.tensorboard=false", "train.log_every_steps=1", "eval.batch_size=4", *extra,
    ])


@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return Path(train(tiny(data_root, out, "run"))["run_dir"])


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------------------ 1: never overwrite user data


def _synthetic_cfg(root: Path, **syn):
    spec = {"kind": "motion", "num_per_class": 1, "num_val_per_class": 1, "num_frames": 4, "size": [16, 16], **syn}
    return apply_overrides(demo_config(), [f"data.root={root}", f"data.synthetic={json.dumps(spec)}"])


def test_1_synthetic_set_never_overwrites_a_users_files(tmp_path, caplog):
    # A dataset of the user's own: its list files are used as they are, nothing is generated into it.
    user = tmp_path / "my_data"
    user.mkdir()
    mine = {"train.txt": "clips/a.mp4 0\n", "val.txt": "clips/b.mp4 1\n", "classes.txt": "cat\ndog\n"}
    for name, text in mine.items():
        (user / name).write_text(text)
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        cfg = build.prepare_synthetic(_synthetic_cfg(user), tmp_path / "unused")
    assert {name: (user / name).read_text() for name in mine} == mine
    assert cfg.data.synthetic is None and cfg.data.root == str(user)
    assert not (user / "synthetic.json").exists() and "dataset of your own" in caplog.text

    # A folder with other files: refused, naming the folder and the way out.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "README.txt").write_text("keep me")
    with pytest.raises(ConfigError) as err:
        build.prepare_synthetic(_synthetic_cfg(other), tmp_path / "unused")
    assert str(other) in str(err.value) and "data.synthetic=null" in str(err.value)
    assert "empty or new folder" in str(err.value) and os.listdir(other) == ["README.txt"]

    # An empty folder is generated into; the same settings again reuse it (no file rewritten).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    build.prepare_synthetic(_synthetic_cfg(fresh), tmp_path / "unused")
    listed = (fresh / "train.txt").read_text()
    assert len(listed.splitlines()) == 8 and (fresh / "synthetic.json").is_file()  # 8 directions x 1
    stamp = (fresh / "train.txt").stat().st_mtime_ns
    build.prepare_synthetic(_synthetic_cfg(fresh), tmp_path / "unused")
    assert (fresh / "train.txt").stat().st_mtime_ns == stamp

    # Other settings regenerate: only the files generated before are replaced, a user's addition stays.
    (fresh / "my_notes.txt").write_text("mine")
    build.prepare_synthetic(_synthetic_cfg(fresh, num_per_class=2), tmp_path / "unused")
    assert len((fresh / "train.txt").read_text().splitlines()) == 16
    assert (fresh / "my_notes.txt").read_text() == "mine"


def test_1_cli_refuses_to_generate_into_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.txt").write_text("x.mp4 0\n")  # no val.txt: not a complete dataset either
    code, _, err = run_cli(capsys, "train", "demo_tiny_cpu", f"data.root={tmp_path / 'data'}",
                           f"run.output_dir={tmp_path}")
    assert code == 2 and str(tmp_path / "data") in err and "refusing to generate" in err
    assert (tmp_path / "data" / "train.txt").read_text() == "x.mp4 0\n"


# ------------------------------------------------------------------------------ 2: one run per folder


def test_2_existing_run_folder_needs_resume_or_overwrite(data_root, tmp_path):
    first = train(tiny(data_root, tmp_path, "run"))
    run = Path(first["run_dir"])
    with pytest.raises(ConfigError) as err:
        train(tiny(data_root, tmp_path, "run"))
    message = str(err.value)
    assert str(run) in message and "--resume" in message and "run.name" in message and "--overwrite" in message

    # --overwrite starts clean: one run's metrics, checkpoints of this run only.
    (run / "checkpoints" / "ckpt_000000999.pt").write_bytes(b"an old run's file")
    again = train(tiny(data_root, tmp_path, "run", "train.epochs=2"), overwrite=True)
    assert again["state"].step == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert not (run / "checkpoints" / "ckpt_000000999.pt").exists()
    with pytest.raises(ConfigError, match="give one of them"):
        train(tiny(data_root, tmp_path, "run"), resume="auto", overwrite=True)


def test_2_resume_without_a_checkpoint_says_so(data_root, tmp_path, capsys):
    with pytest.raises(CheckpointError, match="has no checkpoint to resume from"):
        train(tiny(data_root, tmp_path, "new"), resume="auto")
    assert not (tmp_path / "new").exists()  # nothing was started
    code, _, err = run_cli(capsys, "train", "demo_tiny_cpu", f"data.root={data_root}", "data.synthetic=null",
                           f"run.output_dir={tmp_path}", "run.name=new", "--resume")
    assert code == 2 and "has no checkpoint to resume from" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ 5: class count of eval


def test_5_eval_refuses_a_model_with_other_classes(trained_run, tmp_path, capsys):
    lines = (trained_run / "config.yaml").read_text()
    root = Path(yaml.safe_load(lines)["data"]["root"])
    for names in (["left", "right", "up", "down", "still"], ["left", "right"]):
        other = tmp_path / f"data{len(names)}"
        other.mkdir()
        (other / "classes.txt").write_text("\n".join(names) + "\n")
        val = [ln for ln in (root / "val.txt").read_text().splitlines() if int(ln.split()[1]) < len(names)]
        (other / "val.txt").write_text("".join(f"{root / ln.split()[0]} {ln.split()[1]}\n" for ln in val))
        code, _, err = run_cli(capsys, "eval", str(trained_run), f"data.root={other}")
        assert code == 2, err
        assert f"predicts 4 classes but the data in {other} has {len(names)}" in err and "Traceback" not in err
    # Same count, other names: the labels would be permuted silently.
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / "classes.txt").write_text("right\nleft\nup\ndown\n")
    (swapped / "val.txt").write_text((root / "val.txt").read_text().replace("val/", f"{root}/val/"))
    code, _, err = run_cli(capsys, "eval", str(trained_run), f"data.root={swapped}")
    assert code == 2 and "name their classes differently (label 0: model 'left', data 'right')" in err


# ------------------------------------------------------------------------------ 6: kill -9 debris, damaged last.pt


def test_6_stale_temporaries_are_removed_and_a_damaged_last_pt_falls_back(data_root, tmp_path, caplog):
    first = train(tiny(data_root, tmp_path, "run", "train.epochs=2", "train.keep_last=3"))
    ckpts = Path(first["run_dir"]) / "checkpoints"
    assert [p.name for p in sorted(ckpts.glob("ckpt_*.pt"))] == ["ckpt_000000002.pt", "ckpt_000000004.pt"]
    # What kill -9 during a save leaves: half-written hidden temporaries, and a last.pt cut short.
    debris = [ckpts / ".last.pt.k9x1.tmp", ckpts / ".ckpt_000000004.pt.k9x2.tmp", ckpts.parent / ".config.yaml.k9.tmp"]
    for path in debris:
        path.write_bytes(b"\x00" * 1000)
    last = ckpts / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])

    with pytest.raises(CheckpointError, match=f"checkpoint {last} is truncated"):
        load_checkpoint(last)
    with caplog.at_level(logging.INFO, logger="hiera_video"):
        assert resolve_resume("auto", Path(first["run_dir"])) == ckpts / "ckpt_000000004.pt"
        resumed = train(tiny(data_root, tmp_path, "run", "train.epochs=3", "train.keep_last=3"), resume="auto")
    assert f"checkpoint {last} is truncated or damaged" in caplog.text
    assert f"resuming from {ckpts / 'ckpt_000000004.pt'}" in caplog.text
    assert "removed 3 temporary file(s)" in caplog.text
    assert resumed["state"].step == 6 and not any(p.exists() for p in debris)
    assert load_checkpoint(last)["loop"]["step"] == 6  # rewritten intact

    # An empty last.pt with no step file beside it: named, not a raw EOFError.
    lone = tmp_path / "lone" / "checkpoints"
    lone.mkdir(parents=True)
    (lone / "last.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checkpoint to resume from"):
        resolve_resume("auto", lone.parent)
    with pytest.raises(CheckpointError, match=r"last.pt is truncated, empty or not a torch checkpoint \(0 bytes\)"):
        load_checkpoint(lone / "last.pt")


# ------------------------------------------------------------------------------ 8: predict --json exit code


def test_8_predict_exit_code_is_the_same_in_json_and_text_mode(trained_run, data_root, capsys):
    video = data_root / (data_root / "val.txt").read_text().split()[0]
    missing = data_root / "missing.mp4"
    for flags in ([], ["--json"]):
        assert run_cli(capsys, "predict", str(video), "--model", str(trained_run), *flags)[0] == 0
        code, out, _ = run_cli(capsys, "predict", str(video), str(missing), "--model", str(trained_run), *flags)
        assert code == 1, (flags, out)
    rows = [json.loads(line) for line in out.splitlines()]
    assert "topk" in rows[0] and rows[1] == {"path": str(missing), "error": "file not found"}


# ------------------------------------------------------------------------------ 9: MAE checkpoint to predict / eval


def test_9_a_pretraining_checkpoint_is_named_as_such(data_root, trained_run, tmp_path, capsys):
    from hiera_video.engine.pretrain import pretrain

    pre = pretrain(tiny(data_root, tmp_path, "mae", "model.name=mae_hiera_base_16x224",
                        f"model.overrides={MAE_MODEL}", "mae.mask_ratio=0.5", "train.max_steps=1"))
    video = data_root / (data_root / "val.txt").read_text().split()[0]
    for source in (pre["run_dir"], Path(pre["run_dir"]) / "checkpoints" / "last.pt", pre["model_dir"]):
        code, _, err = run_cli(capsys, "predict", str(video), "--model", str(source))
        assert code == 2, err
        assert "is a pretraining (MAE) checkpoint" in err and "model.pretrained=" in err and "extract" in err
    code, _, err = run_cli(capsys, "eval", str(trained_run), "--checkpoint",
                           str(Path(pre["run_dir"]) / "checkpoints" / "last.pt"))
    assert code == 2 and "is a pretraining (MAE) checkpoint" in err and "Traceback" not in err


# ------------------------------------------------------------------------------ 11: config values checked up front


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lr=inf", "optim.lr=inf: must be a finite number > 0"),
        ("optim.lr=nan", "optim.lr=nan: must be a finite number > 0"),
        ("optim.warmup_epochs=-3", "optim.warmup_epochs=-3.0: must be a number >= 0"),
        ("aug.mixup=-1", "aug.mixup=-1.0: must be >= 0"),
        ("eval.batch_size=0", "eval.batch_size=0: must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("data.crop_size=0", "data.crop_size=0: must be an integer >= 1"),
        ("data.num_workers=-1", "data.num_workers=-1: must be an integer >= 0"),
        ("data.train_scale=[1.0, 0.3]", "data.train_scale=[1.0, 0.3]: must be [min, max] with 0 < min <= max"),
        ("aug.label_smoothing=1.5", "aug.label_smoothing=1.5: must be a number in [0, 1)"),
        ("model.overrides.embed_dim=-8", "model: embed_dim=-8 must be at least 1"),
        ("model.overrides.num_heads=0", "model: num_heads=0 must be at least 1"),
    ],
)
def test_11_bad_values_fail_before_any_work(override, message, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "demo_tiny_cpu", override, f"run.output_dir={tmp_path}")
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "demo").exists()  # nothing generated, no run folder


def test_11_eval_values_are_checked_for_eval(trained_run, capsys):
    code, _, err = run_cli(capsys, "eval", str(trained_run), "eval.batch_size=0")
    assert code == 2 and "eval.batch_size=0: must be an integer >= 1" in err
    validate(apply_overrides(demo_config(), ["optim.lr=nan"]), "eval")  # an eval does not need an lr


def test_11_a_diverging_run_stops_with_a_clear_error_and_exports_nothing(data_root, tmp_path, capsys):
    with pytest.raises(TrainingDiverged) as err:
        train(tiny(data_root, tmp_path, "nan", "optim.lr=1e30", "optim.clip_grad=null"))
    message = str(err.value)
    # Step 1 with lr 1e30 leaves huge (finite) weights; the loss of step 2 is NaN.
    assert "the training loss is nan at epoch 1, optimizer step 2" in message
    assert "lower optim.lr (peak 1e+30)" in message and "--resume" in message
    run = tmp_path / "nan"
    assert not (run / "model").exists() and not (run / "checkpoints" / "last.pt").exists()

    # An update that makes a weight non-finite is caught at that step (before a checkpoint could save it).
    from hiera_video.engine.loop import LoopState, _check_finite

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    _check_finite(torch.tensor(0.5), model, LoopState(step=6), 1e-3, after_step=True)  # all finite: passes
    with torch.no_grad():
        model[1].bias.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match=r"optimizer step 7 \(epoch 1\) made weights non-finite "
                                               r"\(1.bias\)"):
        _check_finite(torch.tensor(0.5), model, LoopState(step=6), 1e-3, after_step=True)

    code, _, err_text = run_cli(capsys, "train", "demo_tiny_cpu", f"data.root={data_root}", "data.synthetic=null",
                                f"run.output_dir={tmp_path}", "run.name=nan_cli", "optim.lr=1e30",
                                "optim.clip_grad=null", "data.batch_size=4", "train.progress=false")
    assert code == 1 and "training stopped: the training loss is nan at epoch 1, optimizer step 2" in err_text


# ------------------------------------------------------------------------------ 12: CLI order, file modes


def test_12_overrides_are_accepted_after_options(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "demo_tiny_cpu", "--print-config", "train.epochs=3", "optim.lr=0.01")
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["train"]["epochs"] == 3 and printed["optim"]["lr"] == 0.01
    code, out, _ = run_cli(capsys, "demo", "--print-config", "train.epochs=2")
    assert code == 0 and yaml.safe_load(out)["train"]["epochs"] == 2
    # `--resume` followed by an override: the override is not taken for the resume path.
    code, _, err = run_cli(capsys, "train", "demo_tiny_cpu", f"run.output_dir={tmp_path}", "--resume",
                           "run.name=nothing_here")
    assert code == 2 and f"{tmp_path / 'nothing_here'} has no checkpoint" in err
    with pytest.raises(SystemExit):
        main(["train", "demo_tiny_cpu", "--print-config", "--no-such-flag"])


def test_12_run_outputs_are_group_readable(data_root, tmp_path):
    old = os.umask(0o027)  # a group-shared run folder: group may read, others nothing
    try:
        out = train(tiny(data_root, tmp_path, "shared"))
    finally:
        os.umask(old)
    run = Path(out["run_dir"])
    files = [p for p in run.rglob("*") if p.is_file() and "tensorboard" not in p.parts]
    names = {str(p.relative_to(run)) for p in files}
    assert {"config.yaml", "metrics.jsonl", "curves.png", "checkpoints/last.pt", "checkpoints/best.pt",
            "eval_metrics.json", "model/config.json"} <= names, names
    for path in files:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o040, f"{path} is not group-readable: {oct(mode)}"
        assert not mode & 0o007, f"{path} ignores the umask: {oct(mode)}"
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["loop"]["step"] == 2

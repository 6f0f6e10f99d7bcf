"""Config system: loading, inheritance, overrides with type coercion, clear errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hiera_video.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    demo_config,
    find_config,
    list_configs,
    load_config,
    save_config,
)

REPO = Path(__file__).resolve().parents[1]


def test_shipped_configs_load_and_are_in_repo_configs_folder():
    names = list_configs()
    assert {
        "k400_finetune_hiera_base_16x224",
        "k400_mae_pretrain_hiera_base_16x224",
        "ssv2_finetune_hiera_base_16x224",
        "in1k_finetune_hiera_base_224",
        "demo_tiny_cpu",
    } <= set(names)
    for name in names:
        cfg = load_config(name)
        assert isinstance(cfg, Config)
        # configs/ at the repository root is the same set of files (what the issue and README point at).
        assert (REPO / "configs" / f"{name}.yaml").read_text() == find_config(name).read_text()


def test_paper_recipes_have_the_expected_values():
    k400 = load_config("k400_finetune_hiera_base_16x224")
    assert (k400.optim.betas, k400.aug.mixup, k400.aug.cutmix, k400.aug.label_smoothing) == (
        [0.9, 0.999], 0.8, 1.0, 0.1)
    assert k400.optim.layer_decay < 1.0 and k400.data.hflip and k400.data.repeated_aug == 2
    mae = load_config("k400_mae_pretrain_hiera_base_16x224")
    assert mae.mae.mask_ratio == 0.9 and mae.optim.betas == [0.9, 0.95] and mae.model.name.startswith("mae_")
    ssv2 = load_config("ssv2_finetune_hiera_base_16x224")
    # SSv2 inherits the K400 recipe through `base:` but must not flip (left/right labels).
    assert ssv2.data.hflip is False and ssv2.data.num_classes == 174
    assert ssv2.optim.layer_decay == k400.optim.layer_decay and ssv2.aug.mixup == k400.aug.mixup
    img = load_config("in1k_finetune_hiera_base_224")
    assert img.data.kind == "image" and img.model.name == "hiera_base_224"


def test_demo_yaml_equals_embedded_demo_defaults():
    assert config_to_dict(load_config("demo_tiny_cpu")) == config_to_dict(demo_config())


def test_overrides_coerce_types():
    cfg = apply_overrides(
        Config(),
        [
            "optim.lr=3e-4",  # YAML would read this as a string; the float field accepts it
            "train.epochs=7",
            "train.ema=true",
            "optim.clip_grad=null",
            "optim.betas=[0.9, 0.95]",
            "run.name=007",  # string fields keep the raw text
            "model.overrides.depths=[1,1,2,1]",
            "model.overrides.embed_dim=32",
            "data.synthetic.num_frames=4",  # turns an optional section on
            "optim.warmup_epochs=2",  # int accepted for a float field
        ],
    )
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.train.epochs == 7 and cfg.train.ema is True and cfg.optim.clip_grad is None
    assert cfg.optim.betas == [0.9, 0.95] and cfg.run.name == "007"
    assert cfg.model.overrides == {"depths": [1, 1, 2, 1], "embed_dim": 32}
    assert cfg.data.synthetic is not None and cfg.data.synthetic.num_frames == 4
    assert cfg.optim.warmup_epochs == 2.0 and isinstance(cfg.optim.warmup_epochs, float)
    # The input object is not modified.
    assert Config().train.epochs == 100


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'"),
        ("optimizer.lr=1", "unknown config key 'optimizer.lr' (did you mean 'optim'"),
        ("optim.lr=fast", "optim.lr: expected a number, got 'fast'"),
        ("train.epochs=2.5", "train.epochs: expected an integer, got 2.5"),
        ("train.epochs=true", "train.epochs: expected an integer, got True"),
        ("train.ema=maybe", "train.ema: expected true or false"),
        ("train.precision=fp8", "train.precision: expected one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp8'"),
        ("optim.betas=0.9", "optim.betas: expected a list"),
        ("data.root.path=x", "'data.root' is not a section"),
        ("optim.lr", "must look like section.key=value"),
    ],
)
def test_override_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), [override])
    assert message in str(err.value)


def test_yaml_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1.0e-3\n  wieght_decay: 0.1\n")
    typo = r"unknown config key 'optim.wieght_decay' \(did you mean 'optim.weight_decay'"
    with pytest.raises(ConfigError, match=typo):
        load_config(bad)
    bad.write_text("data:\n  batch_size: eight\n")
    with pytest.raises(ConfigError, match="data.batch_size: expected an integer, got 'eight'"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(bad)


def test_unknown_config_name_suggests():
    with pytest.raises(ConfigError, match="did you mean 'k400_finetune_hiera_base_16x224'"):
        load_config("k400_finetune")


def test_base_inheritance_relative_to_file(tmp_path):
    (tmp_path / "parent.yaml").write_text("optim:\n  lr: 0.5\ntrain:\n  epochs: 3\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\ntrain:\n  epochs: 9\n")
    cfg = load_config(tmp_path / "child.yaml", ["optim.min_lr=0.1"])
    assert (cfg.optim.lr, cfg.train.epochs, cfg.optim.min_lr) == (0.5, 9, 0.1)
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "loop.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(demo_config(), ["optim.lr=0.01", "model.overrides.depths=[1,1,1,1]"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(path.read_text())["optim"]["lr"] == 0.01
    again = load_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert not list((tmp_path / "run").glob(".*tmp*"))  # atomic write leaves no temp file

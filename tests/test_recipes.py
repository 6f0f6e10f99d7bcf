"""Every shipped recipe runs on its dataset as published: Kinetics CSVs + video tree, SSv2 JSONs + webm videos,
ImageNet class folders.

For each recipe (not the demo): ``--print-config`` prints a config that loads back to the same values, and a
two-step run with a tiny model (``model.overrides``, 8x32x32 clips, ``train.max_steps=2``) trains on a small
dataset generated here in the published layout, then evaluates with the recipe's test views. The recipe's
format, clip sampler, repeated augmentation, RandAugment with mstd, MixUp/CutMix and test views all run as
shipped; only sizes, device and step count are overridden. ``hiera-video eval`` on such a run writes
``eval_predictions.jsonl``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_fixtures import distinct_frames
from PIL import Image

from hiera_video.cli import main
from hiera_video.config import config_to_dict, list_configs, load_config
from hiera_video.data.synthetic import write_video

RECIPES = {
    "k400_finetune_hiera_base_16x224": "train",
    "k400_mae_pretrain_hiera_base_16x224": "pretrain",
    "ssv2_finetune_hiera_base_16x224": "train",
    "in1k_finetune_hiera_base_224": "train",
}
TINY_VIDEO = "{embed_dim: 16, num_heads: 1, depths: [1, 1, 1, 1]}"
TINY_MAE = ("{embed_dim: 16, num_heads: 1, depths: [1, 1, 1, 1], decoder_embed_dim: 16, decoder_depth: 1, "
            "decoder_num_heads: 1}")
KINETICS_CLASSES = ("abseiling", "playing guitar")  # a label with a space: the crawler's folder name


def test_every_shipped_recipe_is_covered():
    assert set(list_configs()) - {"demo_tiny_cpu"} == set(RECIPES)


def _frames(num_frames: int, seed: int) -> np.ndarray:
    return distinct_frames(num_frames, height=40, width=48, seed=seed)


def make_kinetics(root: Path) -> Path:
    """The official CSV columns; train videos in per-class folders (ActivityNet crawler), validation videos
    in a per-split folder (cvdfoundation tarballs), both named <youtube_id>_<start:06d>_<end:06d>.mp4."""
    rows = {"train": [], "validate": []}
    for split, count in (("train", 3), ("validate", 1)):
        for label_index, label in enumerate(KINETICS_CLASSES):
            for k in range(count):
                youtube_id = f"{split[:2]}{label_index}{k}abcdefg"[:11]
                start = 10 * k + 3
                rows[split].append({"label": label, "youtube_id": youtube_id, "time_start": start,
                                    "time_end": start + 10, "split": split})
                folder = root / "videos" / (label if split == "train" else "val")
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{youtube_id}_{start:06d}_{start + 10:06d}.mp4"
                write_video(folder / name, _frames(24, seed=len(rows[split])), fps=30)
    (root / "annotations").mkdir(parents=True)
    for split, split_rows in rows.items():
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["label", "youtube_id", "time_start", "time_end", "split"])
            writer.writeheader()
            writer.writerows(split_rows)
    # A row whose video the downloader could not fetch (Kinetics always has some): skipped, counted.
    with open(root / "annotations" / "train.csv", "a", newline="") as handle:
        handle.write("abseiling,missingvideo,0,10,train\n")
    return root


def make_ssv2(root: Path) -> Path:
    """something-something-v2-{train,validation,labels}.json and 20bn-something-something-v2/<id>.webm (VP9)."""
    templates = ["Pushing [something] from left to right", "Pushing [something] from right to left",
                 "Holding [something]"]
    labels = {template.replace("[", "").replace("]", ""): str(i) for i, template in enumerate(templates)}
    videos = root / "20bn-something-something-v2"
    videos.mkdir(parents=True)
    entries = {"train": [], "validation": []}
    video_id = 1000
    for split, count in (("train", 2), ("validation", 1)):
        for template in templates:
            for _ in range(count):
                video_id += 1
                entries[split].append({"id": str(video_id), "label": template.lower(), "template": template,
                                       "placeholders": ["something"]})
                write_video(videos / f"{video_id}.webm", _frames(20, seed=video_id), fps=12, codec="vp9")
    (root / "labels").mkdir()
    (root / "labels" / "something-something-v2-labels.json").write_text(json.dumps(labels))
    for split, split_entries in entries.items():
        (root / "labels" / f"something-something-v2-{split}.json").write_text(json.dumps(split_entries))
    return root


def make_imagenet(root: Path) -> Path:
    """root/{train,val}/<wnid>/*.JPEG, the torchvision ImageFolder / ImageNet layout."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for k in range(count):
                pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{k}.JPEG", format="JPEG")
    return root


def _common(out: Path, name: str) -> list[str]:
    return [f"run.output_dir={out}", f"run.name={name}", "train.max_steps=2", "train.device=cpu",
            "train.precision=fp32", "train.progress=false", "train.tensorboard=false", "train.log_every_steps=1",
            "data.batch_size=2", "data.num_workers=0", "eval.batch_size=2", "data.crop_size=32"]


def _video(out: Path, name: str) -> list[str]:
    return [*_common(out, name), "data.num_frames=8", "data.num_classes=null"]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_print_config_round_trips(recipe, capsys):
    assert main([RECIPES[recipe], recipe, "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == config_to_dict(load_config(recipe))
    assert printed["data"]["format"] in ("kinetics_csv", "ssv2_json", "image_folders")


def _predictions(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "eval_predictions.jsonl").read_text().splitlines()]


def test_k400_recipe_on_the_official_csvs_and_eval_writes_predictions(tmp_path, capsys):
    root = make_kinetics(tmp_path / "k400")
    overrides = [f"data.root={root}", f"model.overrides={TINY_VIDEO}", *_video(tmp_path, "k400")]
    assert main(["train", "k400_finetune_hiera_base_16x224", *overrides]) == 0
    run = tmp_path / "k400"
    report = json.loads((run / "eval_metrics.json").read_text())
    # 2 validation videos found in the per-split folder, each scored over the recipe's 5 clips x 3 crops.
    assert report["num_videos"] == 2 and report["num_failed"] == 0
    assert report["class_names"] == list(KINETICS_CLASSES)  # sorted CSV labels
    saved = load_config(run / "config.yaml")
    assert (saved.data.train_sampler, saved.data.repeated_aug, saved.data.randaug_mstd) == ("repeated", 2, 0.5)
    train_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train_rows if r["kind"] == "train"] == [1, 2]

    # `hiera-video eval` adds eval_predictions.jsonl: one line per video, all classes, top-5, path and label.
    capsys.readouterr()
    assert main(["eval", str(run), "eval.num_clips=2"]) == 0
    lines = _predictions(run)
    assert [line["index"] for line in lines] == [0, 1]
    for line in lines:
        assert Path(line["path"]).is_file() and "/videos/val/" in line["path"]
        assert line["label_name"] == KINETICS_CLASSES[line["label"]] and line["split"] == "val"
        assert len(line["probs"]) == 2 and abs(sum(line["probs"]) - 1) < 1e-5
        assert [name for name, _ in line["topk"]] == [KINETICS_CLASSES[i] for i in np.argsort(line["probs"])[::-1]]
        assert line["topk"][0][1] == max(line["probs"])
    # The lines agree with the metrics file written by the same evaluation.
    metrics = json.loads((run / "eval_val_metrics.json").read_text())
    top1 = np.mean([int(np.argmax(line["probs"])) == line["label"] for line in lines])
    assert metrics["top1"] == pytest.approx(top1)


def test_mae_recipe_pretrains_on_the_official_csvs(tmp_path):
    root = make_kinetics(tmp_path / "k400")
    # 8x32x32 clips hold 4 mask units; the recipe's 0.9 would keep none, so 0.5 here.
    overrides = [f"data.root={root}", f"model.overrides={TINY_MAE}", "mae.mask_ratio=0.5", *_video(tmp_path, "mae")]
    assert main(["pretrain", "k400_mae_pretrain_hiera_base_16x224", *overrides]) == 0
    run = tmp_path / "mae"
    assert (run / "checkpoints" / "last.pt").is_file() and (run / "model" / "config.json").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if r["kind"] == "train"]) == 2


def test_ssv2_recipe_on_the_official_jsons_and_webm_videos(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    overrides = [f"data.root={root}", f"model.overrides={TINY_VIDEO}", *_video(tmp_path, "ssv2")]
    assert main(["train", "ssv2_finetune_hiera_base_16x224", *overrides]) == 0
    report = json.loads((tmp_path / "ssv2" / "eval_metrics.json").read_text())
    assert report["num_videos"] == 3 and report["num_failed"] == 0
    assert report["class_names"][0] == "Pushing something from left to right"  # labels.json order


def test_imagenet_recipe_on_class_folders_with_an_unreadable_image(tmp_path, capsys):
    root = make_imagenet(tmp_path / "imagenet")
    overrides = [f"data.root={root}", "model.overrides={embed_dim: 16, num_heads: 1, depths: [1, 1, 1, 1]}",
                 *_common(tmp_path, "in1k"), "data.test_short_side=36"]
    assert main(["train", "in1k_finetune_hiera_base_224", *overrides]) == 0
    run = tmp_path / "in1k"
    assert json.loads((run / "eval_metrics.json").read_text())["num_videos"] == 2
    # Images share the video test format: a broken file is excluded and reported, not raised.
    broken = root / "val" / "n01443537" / "n01443537_0.JPEG"
    broken.write_bytes(b"not a jpeg")
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    lines = _predictions(run)
    assert len(lines) == 2 and lines[1]["path"] == str(broken) and "error" in lines[1]
    assert len(lines[0]["probs"]) == 2 and lines[0]["label"] == 0


# ------------------------------------------------------------------------------- config -> sampler / format


def _cfg(*overrides: str):
    return load_config("k400_finetune_hiera_base_16x224", list(overrides))


def test_train_sampler_selection():
    from hiera_video.data.clip_sampling import RandomClipSampler, SegmentClipSampler
    from hiera_video.engine import build
    from hiera_video.engine.pipeline import eval_pipeline, eval_sampler_kind

    repeated = build.train_clip_sampler(_cfg())
    assert isinstance(repeated, RandomClipSampler) and (repeated.num_clips, repeated.same_start) == (2, True)
    assert (repeated.num_frames, repeated.sampling_rate, repeated.target_fps) == (16, 4, 30)
    single = build.train_clip_sampler(_cfg("data.train_sampler=random", "data.repeated_aug=1"))
    assert isinstance(single, RandomClipSampler) and single.num_clips == 1
    ssv2 = load_config("ssv2_finetune_hiera_base_16x224")
    segment = build.train_clip_sampler(ssv2)
    assert isinstance(segment, SegmentClipSampler) and segment.random and segment.num_clips == 2
    # Segments span the whole video, whatever its length (a 16x4 clip at 30 fps would not).
    indices = segment(300, 12.0, np.random.default_rng(0))
    assert indices.shape == (2, 16) and indices.min() < 300 / 16 and indices.max() >= 300 - 300 / 16
    # Test views follow: uniform for a random-clip recipe, segment for a segment-trained one.
    assert eval_sampler_kind(_cfg()) == "uniform" and eval_sampler_kind(ssv2) == "segment"
    pipe = eval_pipeline(ssv2)  # the one builder of test views (eval, predict, extract)
    views, transform = pipe.clip_sampler, pipe.transform
    assert isinstance(views, SegmentClipSampler) and not views.random and views.num_clips == 2
    assert transform.num_crops == 3
    assert eval_sampler_kind(_cfg("data.train_sampler=segment", "eval.sampler=uniform")) == "uniform"


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.train_sampler=random"], "data.repeated_aug=2 draws several clips per video"),
    (["data.train_sampler=repeated", "data.repeated_aug=1"], "needs data.repeated_aug >= 2"),
    (["data.format=image_folders"], "image_folders holds images but data.kind is 'video'"),
    (["data.format=ssv2_json"], "data.labels_file: the ssv2_json format needs the class file"),
    (["data.randaug_mstd=-1"], "data.randaug_mstd must be >= 0"),
    (["data.format=kinetics_csv", "data.train_list=missing.csv"], "data.train_list: Kinetics CSV"),
    (["data.format=class_folders", "data.train_split=nowhere"], "data.train_split: video folder"),
])
def test_data_config_errors_name_the_key(tmp_path, overrides, message):
    from hiera_video.config import ConfigError
    from hiera_video.engine import build

    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build.check_data(_cfg(f"data.root={tmp_path}", *overrides), ("train",))


def test_class_folders_format_reads_videos_per_class(tmp_path):
    from hiera_video.engine import build

    for split, count in (("train", 2), ("val", 1)):
        for label in ("cooking", "cycling"):
            (tmp_path / split / label).mkdir(parents=True)
            for k in range(count):
                write_video(tmp_path / split / label / f"{k}.mp4", _frames(20, seed=k), fps=30)
    (tmp_path / "val" / "cycling" / "0.mp4").unlink()
    (tmp_path / "val" / "cycling").rmdir()  # a validation split missing a class keeps the label order
    cfg = _cfg(f"data.root={tmp_path}", "data.format=class_folders", "data.num_frames=8", "data.crop_size=32")
    build.check_data(cfg, ("train", "val"))
    assert build.read_class_names(cfg) == ["cooking", "cycling"]
    data = build.train_pipeline(cfg)
    assert [r.label for r in data.dataset.records] == [0, 0, 1, 1] and data.collate_fn is not None
    clips, label, index = data.dataset[2]
    assert clips.shape == (2, 3, 8, 32, 32) and (label, index) == (1, 2)  # 2 repeated clips
    views, label, index, valid = build.eval_dataset(cfg, "val")[0]
    assert views.shape == (15, 3, 8, 32, 32) and (label, index, valid) == (0, 0, True)  # 5 clips x 3 crops

"""Annotation formats, VideoDataset / ImageFolderDataset, DataLoader determinism and failure handling."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import distinct_frames, reference_decode
from torch.utils.data import DataLoader

from hiera_video.data import (
    ImageFolderDataset,
    ImageTrainTransform,
    RandomClipSampler,
    UniformClipSampler,
    VideoDataset,
    VideoEvalTransform,
    VideoRecord,
    VideoTrainTransform,
    collate_eval,
    collate_repeated,
    make_image_dataset,
    make_motion_dataset,
    read_class_names,
    read_kinetics_csv,
    read_list_file,
    read_ssv2,
    scan_class_folders,
    write_list_file,
    write_video,
)

CROP = 32


@pytest.fixture(scope="module")
def motion(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("motion")
    splits = make_motion_dataset(root, num_videos_per_class={"train": 4, "val": 2}, num_frames=40, seed=3)
    return root, splits


def _train_dataset(list_file: Path, **kwargs) -> VideoDataset:
    defaults = dict(
        clip_sampler=RandomClipSampler(num_frames=8, sampling_rate=2),
        transform=VideoTrainTransform(crop_size=CROP),
        seed=7,
    )
    defaults.update(kwargs)
    return VideoDataset.from_list_file(list_file, **defaults)


# ---------------------------------------------------------------------------------------------- annotations
def test_list_file_variants(tmp_path: Path) -> None:
    list_file = tmp_path / "lists" / "train.txt"
    list_file.parent.mkdir()
    list_file.write_text(
        "# comment line\n"
        "videos/a.mp4 3\n"
        "videos/my clip with spaces.mp4 12\n"
        "\n"
        "/abs/path/b.webm\t4\t300\t29.97\n"
        "videos/unlabeled.mp4\n"
        "videos/unlabeled with space.mp4\n"
        "videos/c.mp4    7  \n"
    )
    records = read_list_file(list_file)
    base = str(tmp_path / "lists")
    assert records == [
        VideoRecord(f"{base}/videos/a.mp4", 3),
        VideoRecord(f"{base}/videos/my clip with spaces.mp4", 12),
        VideoRecord("/abs/path/b.webm", 4, 300, 29.97),
        VideoRecord(f"{base}/videos/unlabeled.mp4", -1),
        VideoRecord(f"{base}/videos/unlabeled with space.mp4", -1),
        VideoRecord(f"{base}/videos/c.mp4", 7),
    ]
    assert read_list_file(list_file, root="/data")[0].path == "/data/videos/a.mp4"
    with pytest.raises(FileNotFoundError, match="list file"):
        read_list_file(tmp_path / "nope.txt")

    # Round trip of the verified format and the plain format.
    written = write_list_file(tmp_path / "out.txt", [VideoRecord(str(tmp_path / "x y.mp4"), 2, 64, 25.0)])
    assert written.read_text() == "x y.mp4\t2\t64\t25\n"
    assert read_list_file(written) == [VideoRecord(str(tmp_path / "x y.mp4"), 2, 64, 25.0)]
    plain = write_list_file(tmp_path / "plain.txt", [VideoRecord(str(tmp_path / "x y.mp4"), 2)], with_metadata=False)
    assert plain.read_text() == "x y.mp4 2\n"
    assert read_list_file(plain)[0] == VideoRecord(str(tmp_path / "x y.mp4"), 2)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


KINETICS_CSV = (
    "label,youtube_id,time_start,time_end,split,is_cc\n"
    "abseiling,abc123,10,20,train,0\n"
    '"passing American football (in game)",def-456,0,10,train,0\n'
    "zumba,ghi_789,125,135,train,0\n"
)


@pytest.mark.parametrize(
    "layout, folder_of",
    [
        ("split", lambda label, split: Path(split)),
        ("label", lambda label, split: Path(label)),
        ("label", lambda label, split: Path(label.replace(" ", "_"))),
        ("split_label", lambda label, split: Path(split) / label),
        ("flat", lambda label, split: Path(".")),
    ],
)
def test_kinetics_csv_layouts(tmp_path: Path, layout: str, folder_of) -> None:
    csv_path = tmp_path / "train.csv"
    csv_path.write_text(KINETICS_CSV)
    root = tmp_path / "videos"
    _touch(root / folder_of("abseiling", "train") / "abc123_000010_000020.mp4")
    _touch(root / folder_of("passing American football (in game)", "train") / "def-456_000000_000010.mkv")
    # zumba is missing (Kinetics always has missing videos).
    records, classes = read_kinetics_csv(csv_path, root)
    assert classes == ["abseiling", "passing American football (in game)", "zumba"]
    assert [(Path(r.path).name, r.label) for r in records] == [
        ("abc123_000010_000020.mp4", 0),
        ("def-456_000000_000010.mkv", 1),
    ]
    explicit, _ = read_kinetics_csv(csv_path, root, layout=layout)
    assert explicit == records
    kept, _ = read_kinetics_csv(csv_path, root, missing="keep")
    assert len(kept) == 3 and kept[2].path.endswith("ghi_789_000125_000135.mp4") and kept[2].label == 2
    with pytest.raises(FileNotFoundError, match="ghi_789"):
        read_kinetics_csv(csv_path, root, missing="error")


def test_kinetics_class_file_and_unlabeled_test_csv(tmp_path: Path) -> None:
    root = tmp_path / "k"
    _touch(root / "val" / "abc123_000010_000020.mp4")  # csv split "val", folder "val"
    _touch(root / "test" / "zzz_000001_000011.mp4")
    (tmp_path / "classes.json").write_text(json.dumps({"zumba": 0, "abseiling": 1}))
    (tmp_path / "val.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,abc123,10,20,val\n")
    records, classes = read_kinetics_csv(tmp_path / "val.csv", root, classes=tmp_path / "classes.json")
    assert classes == ["zumba", "abseiling"] and records[0].label == 1
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\nzzz,1,11,test\n")
    records, _ = read_kinetics_csv(tmp_path / "test.csv", root)
    assert records[0].label == -1 and records[0].path.endswith("test/zzz_000001_000011.mp4")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a Kinetics CSV"):
        read_kinetics_csv(tmp_path / "bad.csv", root)
    (tmp_path / "classes.txt").write_text("zumba\nabseiling\n\n")
    assert read_class_names(tmp_path / "classes.txt") == ["zumba", "abseiling"]


def test_class_folders(tmp_path: Path) -> None:
    for name in ("b_class/x.mp4", "b_class/sub/y.MP4", "a_class/z.webm", "a_class/readme.txt"):
        _touch(tmp_path / name)
    records, classes = scan_class_folders(tmp_path)
    assert classes == ["a_class", "b_class"]
    assert [(Path(r.path).name, r.label) for r in records] == [("z.webm", 0), ("y.MP4", 1), ("x.mp4", 1)]
    with pytest.raises(FileNotFoundError):
        scan_class_folders(tmp_path / "missing")


def test_ssv2_json(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text(
        json.dumps({"Moving something from left to right": "1", "Putting something on something": "0"})
    )
    (tmp_path / "train.json").write_text(
        json.dumps(
            [
                {"id": "78687", "label": "putting a cup on a table", "template": "Putting [something] on [something]"},
                {"id": "42", "label": "moving a pen", "template": "Moving [something] from left to right"},
            ]
        )
    )
    (tmp_path / "test.json").write_text(json.dumps([{"id": "1420"}]))
    records, classes = read_ssv2(tmp_path / "train.json", tmp_path / "labels.json", tmp_path / "videos")
    assert classes == ["Putting something on something", "Moving something from left to right"]
    assert [(Path(r.path).name, r.label) for r in records] == [("78687.webm", 0), ("42.webm", 1)]
    test_records, _ = read_ssv2(tmp_path / "test.json", tmp_path / "labels.json", tmp_path / "videos")
    assert test_records[0].label == -1
    # Flip is off by default: it would swap "left to right" and "right to left".
    dataset = VideoDataset.from_ssv2(tmp_path / "train.json", tmp_path / "labels.json", tmp_path / "videos")
    assert dataset.transform.hflip is None and dataset.classes == classes


# ---------------------------------------------------------------------------------------------- datasets
def test_train_and_test_samples(motion) -> None:
    root, splits = motion
    dataset = _train_dataset(splits.paths["train"])
    assert len(dataset) == 16
    video, label, index = dataset[5]
    assert video.shape == (3, 8, CROP, CROP) and video.dtype == torch.float32
    assert (label, index) == (1, 5)  # train.txt lists 4 videos per class in class order

    repeated = _train_dataset(splits.paths["train"], clip_sampler=RandomClipSampler(8, 2, num_clips=2))
    videos, labels, indices = collate_repeated([repeated[0], repeated[9]])
    assert videos.shape == (4, 3, 8, CROP, CROP)
    assert labels.tolist() == [0, 0, 2, 2] and indices.tolist() == [0, 0, 9, 9]

    test_set = VideoDataset.from_list_file(
        splits.paths["val"],
        train=False,
        clip_sampler=UniformClipSampler(8, 2, num_clips=5),
        transform=VideoEvalTransform(crop_size=CROP, num_crops=3),
    )
    views, label, index, valid = test_set[3]
    assert views.shape == (15, 3, 8, CROP, CROP) and valid and label == 1

    raw = VideoDataset.from_list_file(
        splits.paths["val"], train=False, clip_sampler=UniformClipSampler(8, 2, num_clips=2), transform=None
    )
    clips = raw[0][0]
    reference = reference_decode(root / "val/left/left_00000.mp4")
    expected = UniformClipSampler(8, 2, num_clips=2)(40, 30.0)
    assert clips.dtype == torch.uint8 and np.array_equal(clips.numpy(), reference[expected])


def test_unlabeled_list_gives_minus_one(tmp_path: Path, motion) -> None:
    root, _ = motion
    list_file = tmp_path / "unlabeled.txt"
    list_file.write_text(f"{root}/train/up/up_00000.mp4\n")
    dataset = _train_dataset(list_file)
    assert dataset[0][1] == -1


def _collect(loader: DataLoader) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(videos.clone(), labels.clone(), indices.clone()) for videos, labels, indices in loader]


def test_dataloader_workers_match_single_process(motion) -> None:
    _, splits = motion
    dataset = _train_dataset(splits.paths["train"])
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    dataset[3]
    # Per-sample seeding restores the caller's generator (training code's randomness is untouched).
    assert torch.equal(torch.random.get_rng_state(), before)
    single = _collect(DataLoader(dataset, batch_size=4, num_workers=0))
    multi = _collect(DataLoader(dataset, batch_size=4, num_workers=2, timeout=120))
    assert len(single) == len(multi) == 4
    for (a_video, a_label, a_index), (b_video, b_label, b_index) in zip(single, multi):
        assert torch.equal(a_video, b_video) and torch.equal(a_label, b_label) and torch.equal(a_index, b_index)
    # A new epoch gives new augmentation, also in persistent workers (the epoch is in shared memory).
    loader = DataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True, timeout=120)
    dataset.set_epoch(0)
    epoch0 = _collect(loader)
    dataset.set_epoch(1)
    epoch1 = _collect(loader)
    assert torch.equal(epoch0[0][0], single[0][0])
    assert not torch.equal(epoch0[0][0], epoch1[0][0])
    dataset.set_epoch(0)


def _broken_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.mp4"
    write_video(good, distinct_frames(40), gop_size=10)
    data = good.read_bytes()
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the MP4 index is at the end: cannot be opened
    garbage = folder / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01 not a video" * 500)
    return {"good": good, "truncated": truncated, "garbage": garbage, "missing": folder / "missing.mp4"}


def test_training_survives_corrupt_videos(tmp_path: Path, motion, caplog: pytest.LogCaptureFixture) -> None:
    _, splits = motion
    broken = _broken_files(tmp_path / "broken")
    list_file = tmp_path / "mixed.txt"
    shutil.copy(splits.paths["train"], list_file)
    base = splits.paths["train"].parent
    lines = [f"{base / line}" for line in splits.paths["train"].read_text().splitlines()]
    lines[1] = f"{broken['truncated']} 0"
    lines[6] = f"{broken['garbage']} 1"
    lines[11] = f"{broken['missing']} 2"
    list_file.write_text("\n".join(lines) + "\n")
    dataset = _train_dataset(list_file)

    loader = DataLoader(dataset, batch_size=4, num_workers=2, timeout=120)
    batches = _collect(loader)  # the epoch completes
    assert sum(len(labels) for _, labels, _ in batches) == 16
    returned = torch.cat([indices for _, _, indices in batches]).tolist()
    assert not {1, 6, 11} & set(returned)  # broken ones were replaced by readable videos
    report = dataset.log_failures()  # counted across worker processes, named
    assert report.count >= 3
    assert {str(broken["truncated"]), str(broken["garbage"]), str(broken["missing"])} <= set(report.paths)
    assert dataset.failures.count == 0  # reset for the next epoch

    with caplog.at_level(logging.WARNING, logger="hiera_video.data.datasets"):
        dataset[6]
    assert "garbage.mp4" in caplog.text

    # Bounded: a list with nothing readable gives up with the paths tried.
    hopeless = tmp_path / "hopeless.txt"
    hopeless.write_text(f"{broken['garbage']} 0\n{broken['missing']} 1\n")
    with pytest.raises(RuntimeError, match="consecutive samples failed"):
        _train_dataset(hopeless, max_retries=3)[0]


def test_test_time_failures_are_excluded_not_replaced(tmp_path: Path, motion) -> None:
    _, splits = motion
    broken = _broken_files(tmp_path / "broken_eval")
    list_file = tmp_path / "eval.txt"
    base = splits.paths["val"].parent
    lines = [f"{base / line}" for line in splits.paths["val"].read_text().splitlines()]
    lines[2] = f"{broken['garbage']} 1"
    list_file.write_text("\n".join(lines) + "\n")
    dataset = VideoDataset.from_list_file(
        list_file,
        train=False,
        clip_sampler=UniformClipSampler(8, 2, num_clips=2),
        transform=VideoEvalTransform(crop_size=CROP, num_crops=3),
    )
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate_eval, timeout=120)
    evaluated, failed = [], []
    for batch in loader:
        assert batch.views.shape[1:] == (6, 3, 8, CROP, CROP)
        evaluated += batch.indices.tolist()
        failed += batch.failed
    assert failed == [2] and sorted(evaluated) == [0, 1, 3, 4, 5, 6, 7]
    report = dataset.failure_report()
    assert report.count == 1 and report.paths == [str(broken["garbage"])]


def test_short_video_error_mode_counts_as_failure(tmp_path: Path, motion) -> None:
    root, splits = motion
    short = tmp_path / "short.mp4"
    write_video(short, distinct_frames(6))
    list_file = tmp_path / "short.txt"
    list_file.write_text(f"{short} 0\n{root}/train/up/up_00001.mp4 3\n")
    dataset = _train_dataset(list_file, clip_sampler=RandomClipSampler(8, 2, short_video="error"))
    video, label, index = dataset[0]
    assert index == 1 and label == 3 and dataset.failures.count >= 1
    clamped = _train_dataset(list_file)  # default clamp: the short video is used, last frame repeated
    assert clamped[0][2] == 0


def test_image_folder_dataset(tmp_path: Path) -> None:
    splits = make_image_dataset(tmp_path, num_images_per_class=3, size=(40, 40))
    dataset = ImageFolderDataset(splits.paths["train"], transform=ImageTrainTransform(crop_size=CROP))
    assert dataset.classes == ["circle", "square", "triangle"]  # sorted folder names
    image, label, index = dataset[4]
    assert image.shape == (3, CROP, CROP) and label == 1 and index == 4
    assert torch.equal(dataset[4][0], image)  # seeded per sample
    # Test items have the video datasets' format: (views [V=1, C, H, W], label, index, valid).
    eval_set = ImageFolderDataset(splits.paths["val"], train=False)
    views, label, index, valid = eval_set[0]
    assert views.shape == (1, 3, 224, 224) and (label, index, valid) == (0, 0, True)
    (splits.paths["val"] / "circle" / "circle_00001.png").write_bytes(b"broken png")  # item 1
    views, label, index, valid = eval_set[1]  # never raises, never replaced
    assert views.numel() == 0 and (label, index, valid) == (0, 1, False) and eval_set.failures.count == 1
    batch = collate_eval([eval_set[i] for i in range(3)])
    assert batch.views.shape == (2, 1, 3, 224, 224) and batch.indices.tolist() == [0, 2] and batch.failed == [1]
    (splits.paths["train"] / "circle" / "circle_00000.png").write_bytes(b"broken png")
    replaced = dataset[0]
    assert replaced[2] != 0 and dataset.failures.count == 1
    batch = next(iter(DataLoader(dataset, batch_size=9, num_workers=2, timeout=120)))
    assert batch[0].shape == (9, 3, CROP, CROP)


def test_bad_dataset_arguments(motion) -> None:
    _, splits = motion
    with pytest.raises(ValueError, match="at least one video"):
        VideoDataset([])
    with pytest.raises(ValueError, match="transform"):
        _train_dataset(splits.paths["train"], transform="fancy")
    with pytest.raises(IndexError):
        _train_dataset(splits.paths["train"])[100]


def test_failure_counts_and_epoch_reach_spawned_workers(tmp_path: Path, motion) -> None:
    """Shared state must also work when workers are spawned (nothing inherited through fork)."""
    root, _ = motion
    broken = _broken_files(tmp_path / "spawn")
    list_file = tmp_path / "spawn.txt"
    list_file.write_text(f"{root}/train/up/up_00000.mp4 2\n{broken['garbage']} 1\n")
    dataset = _train_dataset(list_file)
    dataset.set_epoch(3)
    expected = [dataset[i][0] for i in range(2)]
    dataset.reset_failures()
    loader = DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context="spawn", timeout=300)
    videos, _, _ = next(iter(loader))
    assert torch.equal(videos[0], expected[0]) and torch.equal(videos[1], expected[1])  # epoch 3 seen
    assert dataset.failures.count >= 1 and str(broken["garbage"]) in dataset.failure_report().paths


def test_samples_own_their_seeds_and_leave_the_global_random_state_alone(motion) -> None:
    """The data layer is the one owner of per-sample seeding (no wrapper re-seeds around it): a sample depends
    on (seed, epoch, index) only, not on call order, and loading it in the training process (num_workers=0)
    leaves python's, numpy's and torch's global streams where they were."""
    import random

    _, splits = motion
    dataset = _train_dataset(splits.paths["train"], transform=VideoTrainTransform(crop_size=CROP, erase_prob=0.5))
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
    first = dataset[1][0]
    dataset[2]
    again = dataset[1][0]
    assert torch.equal(first, again)
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1][0], first)  # another epoch, another draw

#!/usr/bin/env python
"""Data-pipeline throughput per worker: full training pipeline vs raw decoding of the same frames.

Generates 340x256 H.264 videos (10 s at 30 fps, Kinetics' usual pre-resized size) with smooth moving content,
then measures in one process with one thread (what one DataLoader worker has):

* ``raw``: open the video, sample a 16x4 clip, decode its frames to uint8 RGB (the reader alone);
* ``pipeline``: ``VideoDataset[i]``: the same decode plus the full training augmentation (random resized
  crop to 224, flip, RandAugment rand-m7-n4, normalisation, random erasing) with per-sample seeding;
* ``K=2``: repeated augmentation, two clips per video decoded in one read of the union of their frames
  (random start per clip), and ``K=2, same start`` (both clips from the same frames, augmented twice).

The conditions run interleaved sample by sample over the same clips (same seeds, so the same frames) for
several rounds; medians over rounds are reported. Times are process CPU time (all threads of the process,
decoder threads included), which unlike wall time is not inflated when other jobs compete for the cores; on
an idle machine the two agree. Wall times are printed in brackets. Goals: pipeline <= 1.25x raw, K=2 <= 1.4x one clip.

    python tools/bench_data.py                 # both GOP settings, default sizes
    python tools/bench_data.py --gop 16 --videos 4 --rounds 3
    python tools/bench_data.py --mode decoders # the three backends on the same files (bench_decoders.py)
    python tools/bench_data.py --mode loader   # DataLoader throughput with each backend
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    import hiera_video  # noqa: F401
except ImportError:  # running from a checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hiera_video.data import (
    RandomClipSampler,
    VideoDataset,
    VideoRecord,
    VideoTrainTransform,
    open_video,
    write_video,
)
from hiera_video.data.datasets import sample_rng, sample_seed, seeded_torch


def natural_video(num_frames: int, height: int, width: int, seed: int) -> np.ndarray:
    """Camera pan over a random texture, a dozen textured objects moving independently, sensor noise.

    The independently moving objects (occlusions, new content every frame) make x264 spend a bit rate in the
    range of real 340x256 clips; the bit rate matters because the decoder's work grows with it, and overly
    smooth content would flatter the decoder against the augmentation. The rate is printed with the results.
    """
    rng = np.random.default_rng(seed)
    size = (height * 2, width * 2)
    coarse = torch.from_numpy(rng.random((1, 3, 24, 32)).astype(np.float32))
    fine = torch.from_numpy(rng.random((1, 3, 160, 220)).astype(np.float32))
    texture = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic") * 200
    texture += torch.nn.functional.interpolate(fine, size=size, mode="bilinear") * 55
    texture = texture[0].permute(1, 2, 0).numpy()
    num_objects = 12
    sprites = rng.integers(0, 256, size=(num_objects, 12, 12, 3)).astype(np.float32)
    sprites = np.kron(sprites, np.ones((1, 3, 3, 1), dtype=np.float32))  # 36x36 blocky textures
    positions = rng.uniform(0, 1, size=(num_objects, 2)) * (height - 36, width - 36)
    velocities = rng.normal(0, 2.5, size=(num_objects, 2))
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        top = int(height / 2 + height / 3 * np.sin(t / 45))
        left = int((t * 0.9) % width)
        frame = texture[top : top + height, left : left + width].copy()
        positions += velocities
        for axis, limit in ((0, height - 36), (1, width - 36)):  # bounce off the borders
            out = (positions[:, axis] < 0) | (positions[:, axis] > limit)
            velocities[out, axis] *= -1
            positions[:, axis] = positions[:, axis].clip(0, limit)
        for sprite, (y, x) in zip(sprites, positions.astype(int)):
            frame[y : y + 36, x : x + 36] = sprite
        frame += rng.normal(0, 3.0, size=frame.shape)
        frames[t] = np.clip(frame, 0, 255).astype(np.uint8)
    return frames


def make_videos(folder: Path, count: int, gop: int, num_frames: int = 300) -> list[VideoRecord]:
    records = []
    for index in range(count):
        path = folder / f"natural_v2_gop{gop}_{index:02d}.mp4"  # bump the version when the content changes
        if not path.exists():
            frames = natural_video(num_frames, 256, 340, seed=index)
            write_video(path, frames, fps=30, gop_size=gop, max_b_frames=3, crf=23, preset="medium")
        records.append(VideoRecord(str(path), index % 4))
    return records


def raw_decode(dataset: VideoDataset, index: int) -> list[torch.Tensor]:
    """What the reader alone does for ``dataset[index]``: the same clip indices, decoded to uint8 clips."""
    record = dataset.records[index]
    rng = sample_rng(dataset.seed, dataset.epoch, index, 0)
    with open_video(record.path, backend=dataset.backend) as reader:
        return reader.get_clips(dataset.clip_sampler(len(reader), reader.fps, rng))


def time_pass(function, samples: int) -> None:
    for index in range(samples):
        function(index)


def transform_breakdown(transform: VideoTrainTransform, frames: torch.Tensor, repeats: int) -> dict[str, float]:
    """Milliseconds per clip of each stage of the training transform (uint8 [T, H, W, C] input)."""
    from hiera_video.data.transforms import to_tchw

    stages: dict[str, list[float]] = {"crop": [], "flip": [], "rand_augment": [], "normalize": [], "erase": []}
    for repeat in range(repeats):
        with seeded_torch(sample_seed(0, 0, repeat)):
            moments = [time.process_time()]
            clip = transform.crop(to_tchw(frames))
            moments.append(time.process_time())
            clip = transform.hflip(clip) if transform.hflip is not None else clip
            moments.append(time.process_time())
            clip = transform.rand_augment(clip) if transform.rand_augment is not None else clip
            moments.append(time.process_time())
            output = transform.normalize(clip)
            moments.append(time.process_time())
            if transform.erase is not None:
                transform.erase(output)
            moments.append(time.process_time())
        for name, begin, end in zip(stages, moments[:-1], moments[1:]):
            stages[name].append((end - begin) * 1000)
    return {name: statistics.median(values) for name, values in stages.items()}


def benchmark(records: list[VideoRecord], rounds: int, backend: str, ra_ops: int = 4) -> dict[str, float]:
    # Full augmentation (Hiera / MAE-ST fine-tuning recipe: RandAugment rand-m7-n4, erasing 0.25).
    transform = VideoTrainTransform(crop_size=224, rand_augment_ops=ra_ops)
    one = VideoDataset(records, clip_sampler=RandomClipSampler(16, 4), transform=transform, backend=backend)
    two = VideoDataset(
        records, clip_sampler=RandomClipSampler(16, 4, num_clips=2), transform=transform, backend=backend
    )
    samples = len(records)
    same = VideoDataset(
        records,
        clip_sampler=RandomClipSampler(16, 4, num_clips=2, same_start=True),
        transform=transform,
        backend=backend,
    )
    conditions = {
        "raw_k1": lambda i: raw_decode(one, i),
        "pipeline_k1": lambda i: one[i],
        "raw_k2": lambda i: raw_decode(two, i),
        "pipeline_k2": lambda i: two[i],
        "pipeline_k2_same": lambda i: same[i],
    }
    for function in conditions.values():  # warm-up: imports, allocator, page cache
        time_pass(function, min(2, samples))
    walls: dict[str, list[float]] = {name: [] for name in conditions}
    cpus: dict[str, list[float]] = {name: [] for name in conditions}
    for round_index in range(rounds):
        # A different epoch per round: new clip positions, identical across the conditions of the round.
        for dataset in (one, two, same):
            dataset.set_epoch(round_index)
        round_wall = dict.fromkeys(conditions, 0.0)
        round_cpu = dict.fromkeys(conditions, 0.0)
        # Interleaved per sample (raw, pipeline, raw K=2, pipeline K=2 on the same video back to back), so
        # load changes on the machine hit all conditions alike.
        for index in range(samples):
            for name, function in conditions.items():
                wall, cpu = time.perf_counter(), time.process_time()
                function(index)
                round_wall[name] += time.perf_counter() - wall
                round_cpu[name] += time.process_time() - cpu
        for name in conditions:
            walls[name].append(round_wall[name])
            cpus[name].append(round_cpu[name])
    # Ratios and rates from CPU time (robust to other load on the machine); wall time reported alongside.
    # Ratios are medians of per-round ratios (each round compares the same clips).
    result = {f"{name}_ms": statistics.median(values) / samples * 1000 for name, values in cpus.items()}
    result.update({f"{name}_wall_ms": statistics.median(v) / samples * 1000 for name, v in walls.items()})
    result["pipeline_over_raw"] = statistics.median(p / r for p, r in zip(cpus["pipeline_k1"], cpus["raw_k1"]))
    result["k2_over_k1"] = statistics.median(p / r for p, r in zip(cpus["pipeline_k2"], cpus["pipeline_k1"]))
    result["raw_k2_over_k1"] = statistics.median(p / r for p, r in zip(cpus["raw_k2"], cpus["raw_k1"]))
    result["k2_same_over_k1"] = statistics.median(p / r for p, r in zip(cpus["pipeline_k2_same"], cpus["pipeline_k1"]))
    result["clips_per_s_k1"] = 1000 / result["pipeline_k1_ms"]
    result["clips_per_s_k2"] = 2000 / result["pipeline_k2_ms"]
    result["raw_clips_per_s"] = 1000 / result["raw_k1_ms"]
    frames = raw_decode(one, 0)[0]
    result.update({f"transform_{k}_ms": v for k, v in transform_breakdown(transform, frames, 20).items()})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gop", type=int, nargs="+", default=[250, 16], help="GOP sizes to test")
    parser.add_argument("--videos", type=int, default=8, help="videos per GOP setting (samples per round)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--mode", default="pipeline", choices=["pipeline", "decoders", "loader"])
    parser.add_argument("--backend", default="auto", choices=["auto", "pyav", "torchcodec", "decord"])
    parser.add_argument(
        "--ra-ops", type=int, nargs="+", default=[4], help="RandAugment ops per clip to test (4 = the default)"
    )
    parser.add_argument("--cache", type=Path, default=None, help="folder for the generated videos")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # one DataLoader worker = one core
    cache = args.cache or Path(tempfile.gettempdir()) / "hiera_video_bench_data"
    cache.mkdir(parents=True, exist_ok=True)
    if args.mode != "pipeline":
        from bench_decoders import run_decoders, run_loader

        results = run_decoders(cache, args.rounds) if args.mode == "decoders" else run_loader(cache)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return 0
    results = {}
    for gop, ra_ops in [(gop, ra_ops) for gop in args.gop for ra_ops in args.ra_ops]:
        records = make_videos(cache, args.videos, gop)
        result = benchmark(records, args.rounds, args.backend, ra_ops)
        result["mbit_per_s"] = statistics.mean(Path(r.path).stat().st_size * 8 / 10 / 1e6 for r in records)
        results[f"gop{gop}_ra{ra_ops}"] = result
        print(
            f"\n== 340x256 H.264 ({result['mbit_per_s']:.2f} Mbit/s), GOP {gop}, 16x4 clips, 224 crop, "
            f"RandAugment n={ra_ops}, backend {args.backend}, 1 thread =="
        )
        print("(CPU ms per clip; wall ms in brackets)")
        print(
            f"raw decode        : {result['raw_k1_ms']:7.1f} ms/clip  ({result['raw_clips_per_s']:.1f} clips/s)"
            f"  [{result['raw_k1_wall_ms']:.1f}]"
        )
        print(
            f"pipeline (K=1)    : {result['pipeline_k1_ms']:7.1f} ms/clip  ({result['clips_per_s_k1']:.1f} clips/s)"
            f"  -> {100 * (result['pipeline_over_raw'] - 1):+.1f}% over raw (goal <= +25%)"
            f"  [{result['pipeline_k1_wall_ms']:.1f}]"
        )
        print(
            f"pipeline (K=2)    : {result['pipeline_k2_ms']:7.1f} ms/video ({result['clips_per_s_k2']:.1f} clips/s)"
            f"  -> {result['k2_over_k1']:.2f}x one clip (goal <= 1.4x); raw K=2 {result['raw_k2_ms']:.1f} ms "
            f"({result['raw_k2_over_k1']:.2f}x raw K=1)"
            f"  [{result['pipeline_k2_wall_ms']:.1f}]"
        )
        print(
            f"pipeline (K=2, same start): {result['pipeline_k2_same_ms']:7.1f} ms/video "
            f"-> {result['k2_same_over_k1']:.2f}x one clip  [{result['pipeline_k2_same_wall_ms']:.1f}]"
        )
        stages = ", ".join(f"{k[10:-3]} {v:.1f}" for k, v in result.items() if k.startswith("transform_"))
        print(f"transform stages  : {stages} (ms, median)")
    import os

    print(f"\nload average during the run: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

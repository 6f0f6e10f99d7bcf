"""The three reader backends on the same files: decode CPU time per 16x4 clip (with and without the PyAV damage
check, with and without in-decoder short-side resize) and DataLoader throughput. Run through
``python tools/bench_data.py --mode decoders`` / ``--mode loader``.

Process CPU time (all threads, kernel time included) per clip, conditions interleaved clip by clip over the
same clip positions, medians over rounds; the machine's load average is printed (wall time is not used for
decode figures because other jobs share the cores). The DataLoader figure is wall-clock clips/s with 2
workers (what a user sees) and CPU ms per clip summed over the main process and the workers.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bench_data import make_videos, natural_video

from hiera_video.data import RandomClipSampler, VideoDataset, VideoRecord, VideoTrainTransform, write_video
from hiera_video.data.video_reader import available_backends, open_video

# (label, backend, open_video options)
CONDITIONS = [
    ("pyav", "pyav", {}),
    ("torchcodec", "torchcodec", {}),
    ("torchcodec, no check", "torchcodec", {"check_corruption": False}),
    ("decord", "decord", {}),
    ("decord, no check", "decord", {"check_corruption": False}),
]


def _hd_videos(cache: Path, count: int = 2, num_frames: int = 150) -> list[VideoRecord]:
    records = []
    for index in range(count):
        path = cache / f"natural_v2_720p_gop250_{index:02d}.mp4"
        if not path.exists():
            write_video(path, natural_video(num_frames, 720, 1280, seed=100 + index), fps=30, gop_size=250,
                        max_b_frames=3, crf=23, preset="veryfast")
        records.append(VideoRecord(str(path), 0))
    return records


def _clip(path: str, start: int, backend: str, short_side: int | None, options: dict) -> None:
    with open_video(path, backend=backend, short_side=short_side, **options) as reader:
        reader.get_frames(np.minimum(np.arange(16) * 4 + start, len(reader) - 1))


def run_decoders(cache: Path, rounds: int) -> dict:
    backends = set(available_backends())
    conditions = [c for c in CONDITIONS if c[1] in backends]
    groups = {
        "340x256 GOP 16": (make_videos(cache, 4, 16), 160),
        "340x256 GOP 250": (make_videos(cache, 4, 250), 160),
        "1280x720 GOP 250": (_hd_videos(cache), 256),
    }
    results: dict = {}
    rng = np.random.default_rng(0)
    for group, (records, short_side) in groups.items():
        starts = [(r.path, int(rng.integers(0, 150 - 64))) for r in records for _ in range(2)]
        for path, start in starts[:2]:  # warm-up: imports, page cache, probe memo
            for _, backend, options in conditions:
                _clip(path, start, backend, None, options)
                _clip(path, start, backend, short_side, options)
        table = {(label, side): [] for label, _, _ in conditions for side in (None, short_side)}
        for _ in range(rounds):
            totals = dict.fromkeys(table, 0.0)
            for path, start in starts:
                for label, backend, options in conditions:
                    for side in (None, short_side):
                        begin = time.process_time()
                        _clip(path, start, backend, side, options)
                        totals[(label, side)] += time.process_time() - begin
            for key, total in totals.items():
                table[key].append(total / len(starts) * 1000)
        print(f"\n== {group}: CPU ms per 16x4 clip (median of {rounds} rounds of {len(starts)} clips) ==")
        print(f"{'backend':24s} {'full size':>10s} {f'short side {short_side}':>15s}")
        for label, _, _ in conditions:
            full, small = statistics.median(table[(label, None)]), statistics.median(table[(label, short_side)])
            print(f"{label:24s} {full:10.1f} {small:15.1f}")
            results[f"{group} | {label}"] = {"full_ms": full, f"short{short_side}_ms": small}
    print(f"\nload average: {os.getloadavg()}")
    return results


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_loader(cache: Path, clips: int = 48, workers: int = 2) -> dict:
    records = make_videos(cache, 4, 16)
    records = [records[i % len(records)] for i in range(clips)]
    results = {}
    for backend in available_backends():
        dataset = VideoDataset(records, clip_sampler=RandomClipSampler(16, 4), backend=backend,
                               transform=VideoTrainTransform(crop_size=224, rand_augment_ops=4))
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=workers, shuffle=False)
        begin_wall, begin_self, begin_children = time.perf_counter(), time.process_time(), _children_cpu()
        seen = sum(batch[0].shape[0] for batch in loader)  # workers exit at the end: their CPU time is counted
        wall = time.perf_counter() - begin_wall
        cpu = time.process_time() - begin_self + _children_cpu() - begin_children
        results[backend] = {"clips_per_s": seen / wall, "cpu_ms_per_clip": cpu / seen * 1000}
        print(f"DataLoader {backend:11s}: {seen / wall:5.1f} clips/s wall ({workers} workers, batch 4), "
              f"{cpu / seen * 1000:6.1f} CPU ms per clip (workers + main)")
    print(f"load average: {os.getloadavg()}")
    return results

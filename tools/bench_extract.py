"""Throughput of ``hiera-video extract``: clips/s with decoding overlapped vs the model alone.

    python tools/bench_extract.py                           # hiera_base_16x224, 16x4 clips, CPU
    python tools/bench_extract.py --clips 16 --batch-size 8 --device cuda --amp bf16

Three measurements on the same generated H.264 videos (340x256, 30 fps, the usual re-encoded Kinetics size):

* ``decode``: the extraction input pipeline alone (decode + resize + crop in one DataLoader worker, no
  model), clips/s;
* ``model``: the model step of the extraction loop (normalisation on the device + ``forward_features``)
  on clips decoded and transformed beforehand, clips/s: the ceiling;
* ``extract``: the full engine (``run_extract``: DataLoader workers decoding while the model runs, shards
  written, manifest merged), clips/s from its own timer, which starts before the first batch is decoded
  (so pipeline fill is included) and ends after the last shard is written.

The goal is ``extract`` within 10% of ``model``. The weights are random (throughput does not depend on
them). Prints a Markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _make_videos(root: Path, num_videos: int, frames: int, size: tuple[int, int], fps: float) -> list[Path]:
    from hiera_video.data.synthetic import make_motion_frames, write_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(num_videos):
        path = root / f"video_{i:03d}.mp4"
        # Real content (a moving textured square over noise) keeps the encoder honest about bitrate.
        write_video(path, make_motion_frames(("left", "right", "up", "down")[i % 4], frames, size, rng,
                                             noise_std=4.0), fps=fps, gop_size=30, max_b_frames=2, crf=23)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="hiera_base_16x224")
    p.add_argument("--clips", type=int, default=8, help="clips per measurement")
    p.add_argument("--videos", type=int, default=4, help="videos the clips are spread over")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--sampling-rate", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"])
    p.add_argument("--backend", default="auto", choices=["auto", "decord", "pyav"])
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    import hiera_video
    from hiera_video.engine.extract import (
        ClipStream,
        ExtractConfig,
        _parse_outputs,
        _resolve,
        compute_outputs,
        discover_inputs,
        normalize_batch,
        run_extract,
    )

    device = torch.device(args.device)
    model = hiera_video.create_model(args.model).eval().requires_grad_(False).to(device)
    T = model.config.input_size[0] if model.config.is_video else 1
    if args.clips % args.videos:
        raise SystemExit("--clips must be a multiple of --videos")
    per_video = args.clips // args.videos
    span = T * args.sampling_rate  # clips tile time: each clip covers T * rate frames
    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    t0 = time.perf_counter()
    _make_videos(tmp / "videos", args.videos, per_video * span, (256, 340), 30.0)
    print(f"generated {args.videos} videos of {per_video * span} frames (340x256) in "
          f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)

    settings = dict(input=str(tmp / "videos"), model=args.model, sampling_rate=args.sampling_rate,
                    batch_size=args.batch_size, num_workers=args.num_workers, device=args.device, amp=args.amp,
                    backend=args.backend, progress=False)
    cfg, spec, spatial = _resolve(ExtractConfig.from_dict({**settings, "output_dir": str(tmp / "unused")}), model)
    outputs = _parse_outputs(cfg.outputs, model.config.num_stages, model.config.num_classes)
    items = discover_inputs(tmp / "videos")

    # 1. The input pipeline alone, in the same DataLoader setup as the engine.
    from torch.utils.data import DataLoader

    from hiera_video.engine.extract import _identity

    stream = ClipStream(items, spec, spatial, args.batch_size, cfg.window_frames, args.backend)
    loader = DataLoader(stream, batch_size=None, collate_fn=_identity, num_workers=args.num_workers)
    t0 = time.perf_counter()
    batches = [pk["clips"] for pk in loader if pk["clips"] is not None]
    decode_s = time.perf_counter() - t0
    n = sum(b.shape[0] for b in batches)
    assert n == args.clips, (n, args.clips)

    # 2. The model step of the engine on those pre-decoded batches (one warm-up batch first).
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)

    def step(b: torch.Tensor) -> None:
        x = normalize_batch(b.to(device), cfg.mean, cfg.std, model.config.is_video)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            res = compute_outputs(model, x, outputs)
        for v in res.values():  # the engine moves outputs to the CPU too (and waits for the GPU there)
            v.cpu()

    step(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    model_s = time.perf_counter() - t0

    # 3. The whole engine.
    t0 = time.perf_counter()
    summary = run_extract({**settings, "output_dir": str(tmp / "feats")})
    engine_wall = time.perf_counter() - t0
    assert summary["clips"] == args.clips and summary["failed"] == 0

    rows = {
        "decode (1 worker, no model)": n / decode_s,
        "model only (pre-decoded)": n / model_s,
        "extract (decode overlapped)": summary["clips_per_s"],
    }
    ratio = summary["clips_per_s"] / (n / model_s)
    info = {"model": args.model, "clip": f"{T}x{args.sampling_rate}", "clips": n, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "device": str(device), "amp": args.amp,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "load_avg": os.getloadavg(),
            "clips_per_s": rows, "extract_over_model": ratio, "engine_wall_s_with_model_load": engine_wall}
    print(f"\n{args.model}, {T}x{args.sampling_rate} clips 224x224, batch {args.batch_size}, "
          f"{args.num_workers} decode worker(s), {device} ({torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores), load avg {os.getloadavg()[0]:.1f}\n")
    print("| measurement | clips/s | s/clip |\n|---|---:|---:|")
    for name, v in rows.items():
        print(f"| {name} | {v:.4f} | {1 / v:.2f} |")
    print(f"\nextract / model-only = {ratio:.3f} ({100 * (1 - ratio):+.1f}% slower)")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

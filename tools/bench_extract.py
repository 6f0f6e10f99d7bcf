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

``model`` and ``extract`` alternate ``--repeats`` times (on a shared machine, other processes slow down
whatever runs at that moment) and the ratio is the median of the per-pair ratios. CPU seconds per clip
(this process + its decode workers) are reported too: unlike wall time they do not depend on the load.
The goal is ``extract`` within 10% of ``model``. The weights are random (throughput does not depend on
them). Prints a Markdown table; ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hiera_video.config import DECODERS


def _make_videos(root: Path, num_videos: int, frames: int, size: tuple[int, int], fps: float) -> list[Path]:
    from hiera_video.data.synthetic import make_motion_frames, write_video

    rng = np.random.default_rng(0)
    paths = []
    for i in range(num_videos):
        path = root / f"video_{i:03d}.mp4"
        # Real content (a moving textured square over noise) keeps the encoder honest about bitrate.
        write_video(
            path,
            make_motion_frames(("left", "right", "up", "down")[i % 4], frames, size, rng, noise_std=4.0),
            fps=fps,
            gop_size=30,
            max_b_frames=2,
            crf=23,
        )
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
    p.add_argument("--backend", default="auto", choices=list(DECODERS))
    p.add_argument("--repeats", type=int, default=3, help="interleaved model-only / extract pairs")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    from hiera_video.config import update_config
    from hiera_video.data.streaming import ClipStream, discover_inputs
    from hiera_video.engine.extract import compute_outputs, parse_outputs, resolve_extract_config, run_extract
    from hiera_video.engine.loop import autocast_context
    from hiera_video.engine.pipeline import eval_pipeline

    tmp = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    settings = dict(
        input=str(tmp / "videos"),
        output_dir=str(tmp / "unused"),
        model=args.model,
        sampling_rate=args.sampling_rate,
        target_fps=None,  # the sampling rate in source frames: clips tile the generated videos exactly
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        amp=args.amp,
        backend=args.backend,
        progress=False,
    )
    # The engine's own resolution (model-derived defaults, one Config); the model is built once and shared.
    cfg, loaded = resolve_extract_config(settings=settings)
    device = torch.device(args.device)
    model = loaded.model.to(device)
    T = model.config.input_size[0] if model.config.is_video else 1
    if args.clips % args.videos:
        raise SystemExit("--clips must be a multiple of --videos")
    per_video = args.clips // args.videos
    span = T * args.sampling_rate  # clips tile time: each clip covers T * rate frames
    t0 = time.perf_counter()
    _make_videos(tmp / "videos", args.videos, per_video * span, (256, 340), 30.0)
    print(
        f"generated {args.videos} videos of {per_video * span} frames (340x256) in {time.perf_counter() - t0:.1f}s",
        file=sys.stderr,
    )
    pipe = eval_pipeline(cfg, clips="sliding", size_multiple=tuple(model.config.size_multiple[-2:]))
    outputs = parse_outputs(cfg.extract.outputs, model.config.num_stages, model.config.num_classes)
    items = discover_inputs(tmp / "videos")

    # 1. The input pipeline alone, in the same DataLoader setup as the engine.
    from torch.utils.data import DataLoader

    stream = ClipStream([it.path for it in items], pipe.clip_sampler, pipe.frame_transform, args.batch_size,
                        cfg.extract.window_frames, args.backend)
    loader = DataLoader(stream, batch_size=None, collate_fn=ClipStream.collate_fn, num_workers=args.num_workers)
    t0 = time.perf_counter()
    batches = [pk["clips"] for pk in loader if pk["clips"] is not None]
    decode_s = time.perf_counter() - t0
    n = sum(b.shape[0] for b in batches)
    assert n == args.clips, (n, args.clips)

    # 2 + 3, interleaved: other processes on a shared machine slow down whatever runs at that moment, so
    # each repeat measures the model alone and then the engine, and the ratio is taken per pair.
    normalize = pipe.normalize.to(device)
    precision = cfg.train.precision

    def step(b: torch.Tensor) -> None:
        x = b.to(device)
        x = normalize(x if model.config.is_video else x[:, 0])
        with autocast_context(device, precision):
            res = compute_outputs(model, x, outputs)
        for v in res.values():  # the engine moves outputs to the CPU too (and waits for the GPU there)
            v.cpu()

    def cpu_seconds() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    step(batches[0])  # warm-up
    build_cpu = 0.0  # the engine runs reuse the loaded model: nothing to subtract
    pairs = []
    for r in range(args.repeats):
        c0, t0 = cpu_seconds(), time.perf_counter()
        for b in batches:
            step(b)
        model_s, model_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        c0 = cpu_seconds()
        summary = run_extract(update_config(cfg, {"extract.output_dir": str(tmp / f"feats{r}")}), loaded)
        extract_cpu = cpu_seconds() - c0 - build_cpu  # this process + the (joined) decode workers
        assert summary["clips"] == args.clips and summary["failed"] == 0
        pairs.append({"model_clips_per_s": n / model_s, "extract_clips_per_s": summary["clips_per_s"],
                      "ratio": summary["clips_per_s"] / (n / model_s), "model_cpu_s_per_clip": model_cpu / n,
                      "extract_cpu_s_per_clip": extract_cpu / n, "load_avg_1min": os.getloadavg()[0]})
        print(f"repeat {r}: " + ", ".join(f"{k} {v:.4f}" for k, v in pairs[-1].items()), file=sys.stderr)

    med = {k: statistics.median(p[k] for p in pairs) for k in pairs[0]}
    info = {"model": args.model, "clip": f"{T}x{args.sampling_rate}", "clips": n, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "device": str(device), "amp": args.amp,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "decode_clips_per_s": n / decode_s,
            "repeats": pairs, "median": med}
    print(f"\n{args.model}, {T}x{args.sampling_rate} clips 224x224, {n} clips over {args.videos} videos, "
          f"batch {args.batch_size}, {args.num_workers} decode worker(s), {device} "
          f"({torch.get_num_threads()} threads, {os.cpu_count()} cores); median of {args.repeats} interleaved "
          f"repeats\n")
    print("| measurement | clips/s (wall) | CPU s / clip |\n|---|---:|---:|")
    print(f"| decode only (1 worker, no model) | {n / decode_s:.3f} | |")
    print(f"| model only (pre-decoded clips) | {med['model_clips_per_s']:.4f} | {med['model_cpu_s_per_clip']:.2f} |")
    print(f"| extract (decode overlapped) | {med['extract_clips_per_s']:.4f} | "
          f"{med['extract_cpu_s_per_clip']:.2f} |")
    print(f"\nextract / model-only (median of paired ratios) = {med['ratio']:.3f}; per repeat: "
          + ", ".join(f"{p['ratio']:.3f}" for p in pairs))
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

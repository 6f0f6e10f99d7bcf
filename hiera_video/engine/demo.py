"""``hiera-video demo``: the whole supervised job on embedded defaults, on the CPU, in a few minutes.

1. generate a labelled video set where the label is the direction (one of 8) in which a textured square
   drifts across a noisy background, wrapping around the frame edges
   (:func:`hiera_video.data.make_motion_dataset` with ``wrap=True``): every single frame has the same
   distribution in every class, so only motion, i.e. several frames, tells the classes apart;
2. train a tiny video Hiera (embed 32, depths 1-1-2-1, 8-frame 32x32 clips spanning ~1 s) from scratch with
   the regular supervised engine (:func:`hiera_video.engine.train.train`), validating after every epoch
   (the learning curve is in ``metrics.jsonl`` and ``curves.png``);
3. evaluate it on the held-out videos and print the accuracy.

Everything lands in ``<run.output_dir>/<run.name>`` (default ``runs/demo``): the generated data, the
resolved config, checkpoints, metrics, the curves plot, the confusion matrix and the exported model, which
``hiera-video predict --model runs/demo some_video.mp4`` and ``hiera-video extract`` can use. Running the
demo again into the same folder needs ``--overwrite`` (the generated data is kept and reused).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from hiera_video.config import Config, demo_config

__all__ = ["run_demo"]


def run_demo(cfg: Config | None = None, threads: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Run the demo job; returns the result of :func:`~hiera_video.engine.train.train` plus ``seconds``.

    ``overwrite``: start again in a run folder that holds an earlier demo run (its generated data is kept).
    """
    from hiera_video.config import ConfigError
    from hiera_video.engine.train import previous_run_outputs, train

    cfg = cfg if cfg is not None else demo_config()
    earlier = previous_run_outputs(cfg.run_dir)
    if earlier and not overwrite:
        raise ConfigError(
            f"the run folder {cfg.run_dir} already holds a run ({', '.join(earlier)}): run the demo again with "
            "--overwrite (its generated data is kept and reused), or into another folder with --output-dir DIR"
        )
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.time()
    print(f"hiera-video demo: run folder {cfg.run_dir} (generated data in {cfg.run_dir / 'data'})", flush=True)
    out = train(cfg, overwrite=overwrite)
    seconds = time.time() - start
    m = out["metrics"]
    classes = ", ".join(out["class_names"]) if "class_names" in out else ""
    curve = _curve(out["run_dir"])
    if curve:
        print("learning curve (epoch: val top-1): " + ", ".join(f"{e}: {100 * a:.0f}%" for e, a in curve), flush=True)
    print(
        f"\ndemo accuracy: {100 * m['top1']:.1f}% top-1 on {m['num_videos']} held-out videos "
        f"({classes}; chance {100 / max(1, m['num_classes']):.0f}%) in {seconds / 60:.1f} min\n"
        f"outputs: {out['run_dir']} (eval_metrics.json, eval_confusion.png, curves.png, model/)",
        flush=True,
    )
    out["seconds"] = seconds
    return out


def _curve(run_dir: Any) -> list[tuple[int, float]]:
    """(epoch, validation top-1) pairs from the run's ``metrics.jsonl``."""
    from pathlib import Path

    from hiera_video.engine.logging import read_metrics

    path = Path(run_dir) / "metrics.jsonl"
    rows = read_metrics(path) if path.is_file() else []
    return [(int(r["epoch"]), float(r["top1"])) for r in rows if r.get("kind") == "val" and "top1" in r]

"""DDP under torchrun with 2 Gloo processes on CPU equals one process with the combined batch.

Each of the 2 ranks trains on batch 4 (the ResumableSampler gives rank r the global positions r, r+2, ...);
the reference is one process with batch 8 over the same data. After every step DDP must have averaged the
gradients, so (a) both ranks hold identical weights and (b) they match the single-process weights up to
float summation order. Validation is sharded over the ranks and gathered: every video is counted once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from hiera_video.config import apply_overrides, demo_config
from hiera_video.data import make_motion_dataset
from hiera_video.engine.train import train

REPO = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import os, sys, torch
    from hiera_video.config import apply_overrides, demo_config
    from hiera_video.engine.train import train

    root, out = sys.argv[1], sys.argv[2]
    grabbed = {}

    def grab(state, loss, model):  # the weights right after each optimizer step
        grabbed["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        grabbed["step"] = state.step

    overrides = sys.argv[3:]
    result = train(apply_overrides(demo_config(), overrides), on_step=grab)
    rank = int(os.environ["RANK"])
    torch.save({"weights": grabbed["weights"], "step": grabbed["step"], "metrics": result["metrics"],
                "world_size": int(os.environ["WORLD_SIZE"])}, os.path.join(out, f"rank{rank}.pt"))
    """
)


def overrides(root: Path, out: Path, name: str, batch: int) -> list[str]:
    return [
        f"data.root={root}", "data.synthetic=null", f"run.output_dir={out}", f"run.name={name}",
        f"data.batch_size={batch}", "train.epochs=2", "model.drop_path_rate=0.0", "optim.warmup_epochs=1",
        "train.progress=false", "train.tensorboard=false", "train.log_every_steps=1", "eval.batch_size=4",
    ]


def test_two_gloo_ranks_match_one_process_with_the_combined_batch(tmp_path):
    root = tmp_path / "data"
    make_motion_dataset(root, num_videos_per_class={"train": 4, "val": 3}, num_frames=8, size=(32, 32), fps=8)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker),
           str(root), str(tmp_path), *overrides(root, tmp_path, "ddp", batch=4)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["world_size"] == 2 and ranks[0]["step"] == ranks[1]["step"] == 4  # 16 videos / 8 x 2 epochs
    for key in ranks[0]["weights"]:
        assert torch.equal(ranks[0]["weights"][key], ranks[1]["weights"][key]), key  # gradients synchronised
    # Evaluation: every validation video counted exactly once across the two shards, same result on both.
    assert ranks[0]["metrics"]["num_videos"] == ranks[1]["metrics"]["num_videos"] == 12
    assert ranks[0]["metrics"]["confusion_matrix"] == ranks[1]["metrics"]["confusion_matrix"]
    # Only rank 0 wrote the run folder's checkpoints (one set, no clashes).
    assert (tmp_path / "ddp" / "checkpoints" / "last.pt").is_file()

    grabbed = {}

    def grab(state, loss, model):
        weights = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        grabbed.setdefault("first", weights)  # after step 1
        grabbed.update(step=state.step, weights=weights)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same per-process thread count as each rank: same kernels
    try:
        train(apply_overrides(demo_config(), overrides(root, tmp_path, "single", batch=8)), on_step=grab)
    finally:
        torch.set_num_threads(threads)
    assert grabbed["step"] == 4
    # Equal up to float summation order. AdamW normalises each update by the gradient's running RMS, so a
    # parameter whose gradient is ~0 can turn a 1e-7 relative gradient difference into an lr-sized one; hence
    # the whole-model measure: the DDP/single difference relative to how far steps 2-4 moved the weights
    # (summation order gives ~1e-5; a wrong average, e.g. over a different batch, gives O(1)).
    keys = list(grabbed["weights"])
    difference = torch.cat([(grabbed["weights"][k] - ranks[0]["weights"][k]).flatten() for k in keys]).norm()
    moved = torch.cat([(grabbed["weights"][k] - grabbed["first"][k]).flatten() for k in keys]).norm()
    assert moved > 0 and difference / moved < 1e-3, (difference.item(), moved.item())  # measured 3e-6 to 7e-6

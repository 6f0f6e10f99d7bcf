"""Every consumer of a trained run computes the same probabilities for the same video and clip settings.

One tiny run with EMA (a few steps of the train engine on generated motion videos) is read by
``hiera-video eval``, ``hiera-video predict``, ``hiera-video extract --outputs probs``, ``load_model`` +
``eval_pipeline`` in Python and ``create_model(pretrained=<run>)``. They must agree to float precision:
the same weights (EMA), the same frames (clip sampler, crop, normalisation) and the same averaging over
clips. The EMA weights are made to differ clearly from the raw ones, so a consumer that took the raw
weights would fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hiera_video.config import apply_overrides, demo_config
from hiera_video.data import make_motion_dataset

NUM_CLIPS = 2  # temporal views per video, the same for every consumer
TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    from hiera_video.engine.train import train

    root = tmp_path_factory.mktemp("motion")
    # 20-frame videos, 8-frame clips: two uniform clips per video are two different moments.
    make_motion_dataset(root, num_videos_per_class={"train": 2, "val": 1}, num_frames=20, size=(32, 32), fps=8,
                        seed=0)
    out = tmp_path_factory.mktemp("runs")
    cfg = apply_overrides(demo_config(), [
        f"data.root={root}", "data.synthetic=null", f"run.output_dir={out}", "run.name=agree",
        "data.batch_size=4", "train.epochs=1", "train.max_steps=3", "optim.lr=5e-2", "optim.warmup_epochs=0",
        "train.ema=true", "train.ema_decay=0.5", "train.ckpt_every_steps=0", "train.progress=false",
        "train.tensorboard=false", f"eval.num_clips={NUM_CLIPS}", "eval.num_crops=1", "eval.batch_size=2",
    ])
    torch.manual_seed(0)
    result = train(cfg)
    run_dir = Path(result["run_dir"])
    videos = [line.rsplit(maxsplit=1)[0] for line in (root / "val.txt").read_text().splitlines() if line.strip()]
    return {"dir": run_dir, "root": root, "videos": [str(root / v) for v in videos],
            "names": result["class_names"]}


@pytest.fixture(scope="module")
def eval_probs(run) -> torch.Tensor:
    """``hiera-video eval <run>``: averaged probabilities per validation video, in list order."""
    from hiera_video.engine.evaluate import evaluate_run

    out = evaluate_run(str(run["dir"]), [f"eval.num_clips={NUM_CLIPS}", "eval.num_crops=1"])
    result = out["result"]
    assert result.indices == list(range(len(run["videos"]))) and not result.failed
    return result.probs


def test_ema_weights_are_what_every_consumer_must_take(run):
    from hiera_video.engine.pipeline import load_model

    ema, raw = load_model(run["dir"]), load_model(run["dir"], use_ema=False)
    assert "EMA" in ema.description and "model weights" in raw.description
    diff = max((a - b).abs().max().item() for a, b in zip(ema.model.state_dict().values(),
                                                          raw.model.state_dict().values()))
    assert diff > 1e-3  # else the agreement below would not show which weights a consumer took


def _python_probs(model: torch.nn.Module, run: dict) -> torch.Tensor:
    """The run's test pipeline by hand: clip sampler + eval transform on decoded frames, softmax averaged."""
    from hiera_video.data import open_video
    from hiera_video.engine.pipeline import eval_pipeline, load_model

    cfg = load_model(run["dir"]).config
    cfg.eval.num_clips, cfg.eval.num_crops = NUM_CLIPS, 1
    pipe = eval_pipeline(cfg)
    rows = []
    for path in run["videos"]:
        with open_video(path) as reader:
            indices = pipe.clip_sampler(len(reader), reader.fps)  # [NUM_CLIPS, T]
            frames = reader.get_frames(indices.reshape(-1).tolist())  # [NUM_CLIPS * T, H, W, 3]
        frames = frames.view(*indices.shape, *frames.shape[1:])
        views = pipe.transform(frames)  # [NUM_CLIPS, C, T, H, W]
        with torch.no_grad():
            rows.append(model.eval()(views).float().softmax(-1).mean(0))
    return torch.stack(rows)


def test_eval_predict_extract_and_python_agree(run, eval_probs, tmp_path):
    from hiera_video.cli import main as cli_main
    from hiera_video.engine.pipeline import load_model
    from hiera_video.engine.predict import predict_files

    names, K = run["names"], len(run["names"])
    assert eval_probs.shape == (len(run["videos"]), K)

    # predict: the top-K of every class is the whole distribution (rounded to 6 decimals).
    predicted = predict_files(run["videos"], run["dir"], topk=K, num_clips=NUM_CLIPS, num_crops=1, device="cpu")
    pred = torch.zeros(len(run["videos"]), K)
    for i, r in enumerate(predicted):
        assert "error" not in r, r
        for label, p in r["topk"]:
            pred[i, names.index(label)] = p
    torch.testing.assert_close(pred, eval_probs, atol=1e-6, rtol=0)

    # extract: one probability row per clip; their mean is the video's.
    lst = tmp_path / "videos.txt"
    lst.write_text("".join(f"{v}\n" for v in run["videos"]))
    feats = tmp_path / "feats"
    assert cli_main(["extract", str(lst), str(feats), "--model", str(run["dir"]), "--outputs", "probs",
                     "--clip-mode", "uniform", "--num-clips", str(NUM_CLIPS), "--num-workers", "0",
                     "--id-root", str(run["root"]), "--no-progress"]) == 0
    from hiera_video import load_features

    store = load_features(feats)
    ext = torch.stack([store[Path(v).relative_to(run["root"]).with_suffix("").as_posix()]["probs"].mean(0)
                       for v in run["videos"]])
    assert store[next(iter(store))]["probs"].shape == (NUM_CLIPS, K)
    torch.testing.assert_close(ext, eval_probs, **TOL)

    # Python: the loaded model through the run's eval pipeline by hand.
    torch.testing.assert_close(_python_probs(load_model(run["dir"]).model, run), eval_probs, **TOL)
    # ... and the raw (non-EMA) weights do not give these probabilities: the check above can fail.
    raw = _python_probs(load_model(run["dir"], use_ema=False).model, run)
    assert (raw - eval_probs).abs().max() > 1e-4


@pytest.mark.parametrize("which", ["run", "last.pt"])
def test_create_model_on_the_run_agrees(run, eval_probs, which):
    from hiera_video import create_model
    from hiera_video.engine.pipeline import load_model

    source = run["dir"] if which == "run" else run["dir"] / "checkpoints" / "last.pt"
    model = create_model(pretrained=str(source))  # EMA weights preferred
    # The run folder is what eval reads; last.pt is compared with load_model on the same file.
    expected = eval_probs if which == "run" else _python_probs(load_model(source).model, run)
    torch.testing.assert_close(_python_probs(model, run), expected, **TOL)

"""HF transformers export that transformers' own tools run: pipeline, Auto classes, labels, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_helpers import TINY_IMAGE, randomize_

from hiera_video.cli import main
from hiera_video.models import create_model, export_hf

transformers = pytest.importorskip("transformers")

CLASSES = ["cat", "dog", "eel", "fox", "gnu", "hen", "owl"]


def _training_checkpoint(tmp_path) -> tuple[torch.nn.Module, str]:
    """A training checkpoint as engine/loop.py writes it: weights, EMA, model config, the run's data section."""
    model = randomize_(create_model("hiera_tiny_224", **TINY_IMAGE)).eval()
    ema = randomize_(create_model("hiera_tiny_224", **TINY_IMAGE), seed=5).eval()
    state = {"model": model.state_dict(), "ema": {"module": ema.state_dict(), "updates": 3, "decay": 0.9},
             "model_config": model.config.to_dict(), "model_name": "hiera_tiny_224", "class_names": CLASSES,
             "config": {"data": {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "test_short_side": 80}},
             "loop": {"epoch": 1, "step": 10}}
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "run" / "checkpoints" / "last.pt")
    return ema, str(tmp_path / "run" / "checkpoints" / "last.pt")


def test_pipeline_runs_on_an_exported_run_and_gives_our_probabilities(tmp_path, monkeypatch):
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ema, ckpt = _training_checkpoint(tmp_path)
    assert main(["convert", ckpt, str(tmp_path / "hf"), "--to", "hf"]) == 0
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): c for i, c in enumerate(CLASSES)}
    assert cfg["label2id"] == {c: i for i, c in enumerate(CLASSES)}
    proc_cfg = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert proc_cfg["image_mean"] == [0.5, 0.4, 0.3] and proc_cfg["image_std"] == [0.2, 0.25, 0.3]
    assert proc_cfg["size"] == {"shortest_edge": 80} and proc_cfg["crop_size"] == {"height": 64, "width": 64}

    image = Image.fromarray(np.random.RandomState(0).randint(0, 256, (90, 120, 3), dtype=np.uint8))
    pipe = pipeline("image-classification", model=str(tmp_path / "hf"), device="cpu")
    scores = {r["label"]: r["score"] for r in pipe(image, top_k=len(CLASSES))}
    assert set(scores) == set(CLASSES)
    pixels = AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))(image, return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 64, 64)
    with torch.no_grad():
        ours = ema(pixels).softmax(-1)[0]  # the EMA weights: what the run's checkpoint prefers
        hf = AutoModelForImageClassification.from_pretrained(str(tmp_path / "hf")).eval()
        torch.testing.assert_close(hf(pixel_values=pixels).logits, ema(pixels), rtol=0, atol=1e-5)
    for i, c in enumerate(CLASSES):
        assert scores[c] == pytest.approx(ours[i].item(), abs=1e-6), c


def test_hf_folder_reads_back_labels_and_normalisation(tmp_path):
    m = randomize_(create_model("hiera_tiny_224", **TINY_IMAGE, extra={"class_names": CLASSES,
                                                                         "mean": [0.1, 0.2, 0.3]}))
    export_hf(m, tmp_path / "hf")  # no std recorded: ImageNet's, and mean as recorded
    back = create_model(pretrained=str(tmp_path / "hf"))
    assert back.config.extra["class_names"] == CLASSES
    assert back.config.extra["mean"] == [0.1, 0.2, 0.3] and back.config.extra["std"] == [0.229, 0.224, 0.225]
    for k, v in m.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_hf_export_refuses_what_transformers_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="need 7 distinct class names"):
        export_hf(create_model("hiera_tiny_224", **TINY_IMAGE), tmp_path / "a", class_names=["x", "x"])
    with pytest.raises(ValueError, match="export those with to='timm'"):
        export_hf(create_model("hiera_small_abswin_256", **TINY_IMAGE), tmp_path / "b")

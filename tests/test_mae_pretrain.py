"""A short MAE pretraining run on real (generated, H.264-encoded) videos lowers the reconstruction loss.

The clips are `make_motion_dataset` videos: a bright textured square moving over a static background of
per-pixel random texture. That texture is unpredictable from other mask units (a pixel-exact copy would
have to pass through the encoder's bottleneck), so per-patch *normalised* targets are dominated by noise a
tiny model cannot learn in seconds. The run therefore uses raw (data-normalised) pixel targets and is judged
on held-out clips with fixed masks against two references: the untrained model and the best constant per
clip (every masked patch predicted as the mean of that clip's visible patches).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hiera_video.data import make_motion_dataset
from hiera_video.models import HieraConfig
from hiera_video.models.hiera_mae import MaskedAutoencoderHiera
from hiera_video.models.mae_visualize import save_reconstruction

MEAN, STD = 0.45, 0.225
STEPS, BATCH, LR, FRAMES = 40, 4, 2e-3, 4


def read_clip(path: Path) -> np.ndarray:
    """uint8 [T, H, W, 3], through the library's reader when it is there."""
    try:
        from hiera_video.data.video_reader import open_video
    except ImportError:  # pragma: no cover - the data layer landed separately
        import av

        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with open_video(path) as reader:
        return reader.get_frames(range(len(reader))).numpy()


def load_split(list_file: Path) -> torch.Tensor:
    """All clips of a split as one normalised ``[N, 3, T, H, W]`` float tensor."""
    clips = [read_clip(list_file.parent / line.rsplit(" ", 1)[0]) for line in list_file.read_text().splitlines()]
    x = torch.from_numpy(np.stack(clips)).float().div(255).permute(0, 4, 1, 2, 3)
    return (x - MEAN) / STD


def test_short_pretraining_run_lowers_reconstruction_loss(tmp_path):
    torch.manual_seed(0)
    splits = make_motion_dataset(tmp_path / "motion", num_videos_per_class={"train": 6, "val": 2}, num_frames=FRAMES,
                                 size=(64, 64), seed=0)
    train, val = load_split(splits.paths["train"]), load_split(splits.paths["val"])
    assert train.shape == (24, 3, FRAMES, 64, 64) and val.shape == (8, 3, FRAMES, 64, 64)

    # 2 x 4 x 4 tokens of 2 frames x 16 x 16 px at the prediction resolution; 8 mask units, 2 kept.
    cfg = HieraConfig(input_size=(FRAMES, 64, 64), q_stride=(1, 2, 2), mask_unit_size=(1, 8, 8),
                      patch_kernel=(3, 7, 7), patch_stride=(2, 4, 4), patch_padding=(1, 3, 3), sep_pos_embed=True,
                      embed_dim=32, num_heads=1, depths=(1, 1, 2, 1), q_pool=2, decoder_embed_dim=64,
                      decoder_depth=2, decoder_num_heads=2, mask_ratio=0.75, norm_pix_loss=False)
    model = MaskedAutoencoderHiera(cfg)
    val_mask = model.get_random_mask(len(val), generator=torch.Generator().manual_seed(0))

    def val_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(model(val, mask=val_mask).loss)

    with torch.no_grad():
        out = model.eval()(val, mask=val_mask)
        target, visible = model.get_pixel_target(val), out.token_mask[..., None]
        clip_mean = (target * visible).sum(1, keepdim=True) / visible.sum(1, keepdim=True)
        constant = float(((clip_mean - target) ** 2)[~out.token_mask].mean())
        zero = float((target[~out.token_mask] ** 2).mean())
    before = val_loss()

    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(STEPS):
        idx = torch.randperm(len(train), generator=g)[:BATCH]
        loss = model(train[idx], generator=g).loss  # fresh random masks every step
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = val_loss()

    summary = f"before {before:.3f} after {after:.3f} zero {zero:.3f} per-clip constant {constant:.3f}"
    print(summary)
    assert after < 0.5 * before, summary
    assert after < 0.5 * zero, summary
    assert after < constant, summary  # more than the clip's average colour was learned

    png, gif = save_reconstruction(model, val[:2], tmp_path / "recon.png", mask=val_mask[:2], mean=(MEAN,) * 3,
                                   std=(STD,) * 3, gif=True)
    with Image.open(png) as im:
        assert im.size[1] == 2 * (4 * 64 + 4 * 2) + 2  # 2 clips x 4 rows of 64 px, 2 px padding

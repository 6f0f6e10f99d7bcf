#!/usr/bin/env python
"""Convert Hiera checkpoints.

Examples:
    # original release .pth -> this library's format (config.json + model.safetensors)
    python tools/convert_checkpoint.py hiera_base_16x224.pth out/hiera_base_16x224 --model hiera_base_16x224
    # this library's image model -> HF transformers HieraForImageClassification directory
    python tools/convert_checkpoint.py out/hiera_base_224 out/hf_hiera_base_224 --to hf
"""

from __future__ import annotations

import argparse
import logging

from hiera_video.models.convert import convert_checkpoint


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="checkpoint file, directory or hub repo id")
    p.add_argument("dst", help="output directory")
    p.add_argument("--model", default=None, help="registry name (needed when the source has no config)")
    p.add_argument("--to", default="hiera_video", choices=["hiera_video", "hf", "timm"])
    p.add_argument("--no-strict", action="store_true", help="load what matches instead of failing")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    out = convert_checkpoint(a.src, a.dst, a.model, a.to, strict=not a.no_strict)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

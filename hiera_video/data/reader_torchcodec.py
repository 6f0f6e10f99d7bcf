"""torchcodec backend (PyTorch's decoder; FFmpeg libraries of the system, optional CUDA/NVDEC decoding)."""

from __future__ import annotations

import functools
import importlib.util
import logging
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from hiera_video.data.reader_base import (
    VideoReader,
    VideoReadError,
    VideoSource,
    first_line,
    is_local_path,
    plan_frames,
    rewound,
)
from hiera_video.data.reader_probe import StreamInfo, quarter_turns
from hiera_video.data.reader_pyav import PyAVCrossCheck

__all__ = ["TorchCodecVideoReader", "cuda_decoding_available", "torchcodec_installed"]

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def torchcodec_installed() -> bool:
    """torchcodec is importable (it also needs FFmpeg's shared libraries; see README "Data"). Cached: a failed
    import of its FFmpeg libraries is not retried per video."""
    if importlib.util.find_spec("torchcodec") is None:
        return False
    try:
        import torchcodec
        import torchcodec.decoders  # noqa: F401 - loads the FFmpeg libraries (older torchcodec)
    except (ImportError, OSError, RuntimeError):
        return False
    # Newer torchcodec (0.17 is) imports without FFmpeg and records the failure as ffmpeg_major_version = None;
    # its VideoDecoder then raises. Older versions have no such attribute and failed at the import above.
    return getattr(torchcodec, "ffmpeg_major_version", 0) is not None


def cuda_decoding_available() -> bool:
    """A CUDA device is visible and torchcodec is installed (whether NVDEC takes the codec is known only when
    decoding; torchcodec then falls back to its CPU decoder by itself)."""
    return torch.cuda.is_available() and torchcodec_installed()


class TorchCodecVideoReader(PyAVCrossCheck, VideoReader):
    """torchcodec backend: ``VideoDecoder(seek_mode="exact")``, which scans the file on open and returns frame
    ``i`` in presentation order, bitwise equal to PyAV's frames on every test file (both convert with
    libswscale's default YUV → RGB).

    torchcodec turns frames by the display matrix itself (its ``metadata.rotation``); the reader accounts for
    that, so ``orientation`` works as for the other backends. With ``short_side`` the resize runs inside the
    decoder (``torchcodec.transforms.Resize``, antialiased libswscale on the decoded YUV frame): no full-size
    RGB frame is made. Its pixels are close to, not bitwise, torchvision's antialiased bilinear resize of the
    full-size frames, which our transforms use (mean absolute difference 0.2 levels, tested).

    Damage: torchcodec conceals damaged data silently (no corruption flags in its API). With
    ``check_corruption`` (default) every read is repeated by a PyAV decoder without RGB conversion, as for
    decord. File objects are read into memory once (the checker and torchcodec must not share a file position).
    Geometry: torchcodec's metadata (size, pixel aspect ratio, display-matrix rotation) and, when the checker
    is on, the ``rotate`` tag from its PyAV header (with ``check_corruption=False`` tags are not seen).

    Args:
        source: video file, binary file object or bytes.
        short_side: if given, resize inside the decoder so the short side has this length.
        num_threads: FFmpeg decoder threads (default 1: the DataLoader workers are the parallelism).
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"`` (NVDEC). Frames are returned on that device. Without a
            usable CUDA device the reader decodes on the CPU and logs why (``reader.device`` tells).
        orientation, on_corrupt, name: see :class:`~hiera_video.data.reader_base.VideoReader`.
        check_corruption: cross-check every read with PyAV (see above).
    """

    backend = "torchcodec"

    def __init__(
        self,
        source: VideoSource,
        short_side: int | None = None,
        num_threads: int = 1,
        device: str | torch.device = "cpu",
        orientation: str = "upright",
        on_corrupt: str = "raise",
        name: str | None = None,
        check_corruption: bool = True,
    ) -> None:
        super().__init__(source, name, orientation, on_corrupt)
        if not is_local_path(source) and not isinstance(source, bytes):
            self._source = source = bytes(rewound(source).read())
        self._decoder: Any = None
        self._check_corruption = check_corruption
        self._device = self._choose_device(device)
        try:
            self._decoder = self._open_decoder(source, short_side, orientation, num_threads)
        except (RuntimeError, ValueError) as error:
            if self._device.type == "cpu":
                raise VideoReadError(self.path, f"torchcodec: {first_line(error)}") from error
            logger.warning("torchcodec cannot decode %s on %s (%s); decoding on the CPU", self.path, self._device,
                           first_line(error))
            self._device = torch.device("cpu")
            try:
                self._decoder = self._open_decoder(source, short_side, orientation, num_threads)
            except (RuntimeError, ValueError) as cpu_error:
                raise VideoReadError(self.path, f"torchcodec: {first_line(cpu_error)}") from cpu_error
        metadata = self._decoder.metadata
        self._num_frames = int(metadata.num_frames or 0)
        self.fps = float(metadata.average_fps or 0.0)
        if self._num_frames <= 0:
            self.close()
            raise VideoReadError(self.path, "torchcodec found no frames")

    def _choose_device(self, device: str | torch.device) -> torch.device:
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            logger.warning("device=%s asked for %s but CUDA is not available; decoding on the CPU", device, self.path)
            return torch.device("cpu")
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"torchcodec decodes on 'cpu' or 'cuda', got device={device}")
        return device

    def _open_decoder(self, source: VideoSource, short_side: int | None, orientation: str, num_threads: int) -> Any:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize

        def decoder(transforms: list | None, seek_mode: str) -> Any:
            return VideoDecoder(
                str(source) if is_local_path(source) else source,
                dimension_order="NHWC",
                num_ffmpeg_threads=num_threads,
                device=str(self._device),
                seek_mode=seek_mode,
                transforms=transforms,
            )

        # The rotation torchcodec applies (its display matrix) decides the Resize size. Without a resize the
        # decoder itself tells; with one, a first decoder that only parses the header ("approximate": no scan;
        # about 5 ms on a 340x256 file, the cost of the in-decoder resize here) tells, then the exact one opens.
        first = decoder(None, "exact" if short_side is None else "approximate")
        metadata = first.metadata
        native = quarter_turns(float(metadata.rotation or 0))
        if self._check_corruption:
            # The damage checker opens the file with PyAV anyway: its header also gives the rotate tag.
            info = self._pyav_checker()._info
        else:  # torchcodec's metadata: size after its rotation, pixel aspect ratio (0: unknown); no tags
            quarter = native in (90, 270)
            sar = metadata.pixel_aspect_ratio or 1
            height, width = (metadata.width, metadata.height) if quarter else (metadata.height, metadata.width)
            info = StreamInfo(int(height), int(width), Fraction(sar), 0)
        rotation = native or info.tag_rotation
        plan = plan_frames(info.height, info.width, rotation, info.sar, short_side, orientation)
        self._set_plan(plan, native_rotation=native)
        if plan.decode_size is None:
            return first if short_side is None else decoder(None, "exact")
        # torchcodec rotates before its transforms: the size is asked in its orientation.
        size = plan.decode_size[::-1] if native in (90, 270) else plan.decode_size
        return decoder([Resize(tuple(size))], "exact")

    @property
    def device(self) -> torch.device:
        return self._device

    def _read_sorted_unique(self, indices: np.ndarray) -> torch.Tensor:
        if self._decoder is None:
            raise VideoReadError(self.path, "reader is closed")
        self._cross_check(indices)
        try:
            return self._decoder.get_frames_at(indices.tolist()).data
        except (RuntimeError, ValueError, IndexError) as error:
            first_error = error
        # torchcodec 0.17 fails ("no more frames left to decode") when it seeks to the last key frame of an
        # open-GOP file whose leading frames come after it in decode order; decoding one contiguous range from
        # an earlier key frame gets the same frames (tests: h264_open_gop).
        try:
            keyframes = [int(k) for k in self._decoder._get_key_frame_indices()]
        except (AttributeError, RuntimeError):
            keyframes = [0]
        earlier = [k for k in keyframes if k <= int(indices[0])]
        start = earlier[-2] if len(earlier) >= 2 else 0
        try:
            span = self._decoder.get_frames_in_range(start, int(indices[-1]) + 1).data
        except (RuntimeError, ValueError, IndexError) as error:
            raise VideoReadError(self.path, f"torchcodec: {first_line(first_error)}; retried from key frame "
                                 f"{start}: {first_line(error)}") from error
        return span[torch.from_numpy(indices - start).to(span.device)]

    def close(self) -> None:
        self._decoder = None
        self._close_checker()
        self._release_source()

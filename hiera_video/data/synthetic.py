"""Synthetic videos and images for tests, examples and smoke training runs.

Everything here writes *real* encoded files (H.264 MP4 through PyAV's libx264, VP9 WebM through libvpx-vp9,
PNG through Pillow) so that the code paths under test are the ones used on real datasets: demuxing, B-frames,
GOPs, colour conversion.

* :func:`write_video` encodes a ``uint8 [T, H, W, 3]`` RGB array.
* :func:`make_motion_dataset` writes a labelled video set where the label is the direction in which a bright
  textured square moves over a noisy background. The start position is random, so a single frame carries no
  information about the label: a model has to look at time to solve it. With ``wrap=True`` the square moves
  on a torus (out one side, in at the other) in one of eight directions (:data:`COMPASS_CLASSES`, the demo's
  task): every frame of every class then has exactly the same distribution.
* :func:`make_turn_frames` (classes :data:`TURN_CLASSES`) renders a textured square that moves one way and
  then turns, e.g. ``right_then_up``; it wraps around the frame edges from a random start, so every frame of
  every class has the same distribution, and ``right_then_up`` / ``up_then_right`` contain the same motions:
  only the order of events tells them apart (the embedded demo's task; :func:`make_motion_dataset` writes it
  with ``classes=TURN_CLASSES``).
* :func:`make_image_dataset` writes a tiny class-per-folder image set (shape classes) for the 2D configs.

All generators are deterministic for a given seed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hiera_video.fileio import atomic_write_text

__all__ = [
    "COMPASS_CLASSES",
    "MOTION_CLASSES",
    "TURN_CLASSES",
    "SHAPE_CLASSES",
    "SyntheticSplits",
    "make_image_dataset",
    "make_motion_dataset",
    "make_motion_frames",
    "make_turn_frames",
    "make_shape_image",
    "prepare_synthetic_root",
    "SyntheticRootError",
    "write_video",
]

MOTION_CLASSES: tuple[str, ...] = ("left", "right", "up", "down")
# The eight directions of the compass rose, clockwise from "right" (the demo's classes, with wrap=True).
COMPASS_CLASSES: tuple[str, ...] = ("right", "down_right", "down", "down_left", "left", "up_left", "up", "up_right")
SHAPE_CLASSES: tuple[str, ...] = ("square", "circle", "triangle")
# Order of events: pairs with the same two motions in the two orders (the demo's task).
TURN_CLASSES: tuple[str, ...] = ("right_then_up", "up_then_right", "left_then_down", "down_then_left")

# (dy, dx) unit steps for each motion direction, in image coordinates (y grows downwards).
_DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (0, -1),
    "right": (0, 1),
    "up": (-1, 0),
    "down": (1, 0),
    "still": (0, 0),
    # Diagonals at the same speed (on a torus only: see make_motion_frames).
    "up_right": (-0.5**0.5, 0.5**0.5),
    "up_left": (-0.5**0.5, -0.5**0.5),
    "down_right": (0.5**0.5, 0.5**0.5),
    "down_left": (0.5**0.5, -0.5**0.5),
}

# How far a wrapping square travels over a whole clip, in frame sizes (drawn uniformly per clip).
_WRAP_TRAVEL = (0.5, 1.0)

_CODECS: dict[str, tuple[str, str]] = {
    # user-facing name -> (PyAV encoder name, default container extension)
    "h264": ("libx264", ".mp4"),
    "vp9": ("libvpx-vp9", ".webm"),
    "mpeg4": ("mpeg4", ".mp4"),
}


class SyntheticSplits(NamedTuple):
    """What the dataset generators return.

    ``paths`` maps a split name to the list file (videos) or the class-per-folder directory (images);
    ``classes`` is the class-name list whose position is the label index.
    """

    paths: dict[str, Path]
    classes: list[str]


def _as_uint8_video(frames: object) -> np.ndarray:
    """Convert a numpy array or torch tensor ``[T, H, W, 3]`` to a contiguous uint8 numpy array."""
    if hasattr(frames, "detach"):  # torch.Tensor without importing torch here
        frames = frames.detach().cpu().numpy()  # type: ignore[attr-defined]
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"frames must have shape [T, H, W, 3], got {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {array.dtype}")
    if array.shape[0] == 0:
        raise ValueError("cannot write a video with zero frames")
    return np.ascontiguousarray(array)


def write_video(
    path: str | os.PathLike[str],
    frames: object,
    fps: float = 30,
    codec: str = "h264",
    gop_size: int = 12,
    max_b_frames: int = 2,
    crf: int | None = None,
    preset: str = "veryfast",
    options: Mapping[str, str] | None = None,
) -> Path:
    """Encode RGB frames into a real video file with PyAV.

    Args:
        path: output file; the container (MP4, WebM, MKV...) is chosen by FFmpeg from the extension.
        frames: uint8 array or tensor ``[T, H, W, 3]`` (RGB). ``H`` and ``W`` must be even because the
            output is 4:2:0 chroma-subsampled (``yuv420p``).
        fps: frame rate; may be fractional (e.g. ``30000 / 1001``).
        codec: ``"h264"`` (libx264), ``"vp9"`` (libvpx-vp9) or ``"mpeg4"``.
        gop_size: maximum distance between key frames. Short GOPs make seeking cheap.
        max_b_frames: maximum consecutive B-frames (H.264 / MPEG-4 only; VP9 has no B-frames but uses
            hidden alt-ref frames, which exercise the same out-of-order decoding).
        crf: constant rate factor (quality; lower is better). ``None`` keeps the encoder default.
        preset: libx264 speed preset. B-frames and GOP size are set explicitly after the preset, so even
            ``"ultrafast"`` keeps them.
        options: extra encoder options (FFmpeg AVOptions), e.g. ``{"x264-params": "open-gop=1"}``; an
            ``x264-params`` entry is appended to the GOP settings.

    Returns:
        The path written.
    """
    import av

    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {sorted(_CODECS)}")
    array = _as_uint8_video(frames)
    num_frames, height, width, _ = array.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even height and width, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    rate = Fraction(fps).limit_denominator(1001)
    encoder_name, _ = _CODECS[codec]
    extra_options, options = options, {}
    if codec == "h264":
        options["preset"] = preset
        # Keep key frames exactly where gop_size says (no scene-cut keyframes) so tests know the GOP layout.
        options["x264-params"] = f"keyint={gop_size}:min-keyint={gop_size}:scenecut=0"
        if crf is not None:
            options["crf"] = str(crf)
    elif codec == "vp9":
        # "good" + cpu-used 8 is the fastest non-realtime mode; realtime would drop the alt-ref frames.
        options.update({"deadline": "good", "cpu-used": "8", "row-mt": "0"})
        if crf is not None:
            options.update({"crf": str(crf), "b": "0"})
    elif codec == "mpeg4" and crf is not None:
        options["qscale"] = str(max(1, min(31, crf)))
    for key, value in (extra_options or {}).items():
        if key == "x264-params" and "x264-params" in options:
            options[key] = f"{options[key]}:{value}"
        else:
            options[key] = value

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(encoder_name, rate=rate, options=options)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1) / rate
        stream.codec_context.gop_size = gop_size
        if codec != "vp9":
            stream.codec_context.max_b_frames = max_b_frames
        for index in range(num_frames):
            frame = av.VideoFrame.from_ndarray(array[index], format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1) / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):  # flush delayed (B / alt-ref) frames
            container.mux(packet)
    return path


def make_motion_frames(
    direction: str,
    num_frames: int = 16,
    size: tuple[int, int] = (48, 64),
    rng: np.random.Generator | None = None,
    square_size: int | None = None,
    speed: float | None = None,
    noise_std: float = 8.0,
    wrap: bool = False,
) -> np.ndarray:
    """Render one clip of a textured bright square moving in ``direction`` over a noisy background.

    Args:
        direction: one of ``left``, ``right``, ``up``, ``down`` (or ``still``); with ``wrap`` also the
            diagonals of :data:`COMPASS_CLASSES`.
        num_frames: number of frames ``T``.
        size: ``(H, W)``.
        rng: random generator (start position, textures, noise).
        square_size: side of the square in pixels; default a quarter of the short side.
        speed: pixels per frame; default so that the square travels about half of the free space (``wrap``:
            a random 0.5 to 1 frame size over the clip).
        wrap: the square lives on a torus: it leaves one side and comes back on the other, from a uniformly
            random start. Its position in every frame is then uniform over the frame whatever the direction:
            no single frame carries any information about the label (without ``wrap`` the start is drawn so
            that the trajectory stays inside, which biases the first and last frames slightly).

    Returns:
        uint8 array ``[T, H, W, 3]``.
    """
    if direction not in _DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {sorted(_DIRECTIONS)}")
    rng = rng if rng is not None else np.random.default_rng()
    height, width = size
    side = square_size if square_size is not None else max(4, min(height, width) // 4)
    dy, dx = _DIRECTIONS[direction]
    if "_" in direction and not wrap:
        raise ValueError(f"diagonal direction {direction!r} needs wrap=True (a bounded diagonal path runs out of room)")
    if wrap:
        if speed is None:
            speed = rng.uniform(*_WRAP_TRAVEL) * min(height, width) / max(num_frames - 1, 1)
        path = np.arange(num_frames)[:, None] * speed * np.array([dy, dx], dtype=np.float64)
        return _render_torus(rng.uniform(0, [height, width]) + path, size, side, rng, noise_std)
    free_extent = (height - side) if dy else (width - side)
    steps = max(num_frames - 1, 1)
    if speed is None:
        # At least one pixel per frame when there is room for it, otherwise sub-pixel (rounded) motion.
        speed = min(max(1.0, free_extent / (2 * steps)), free_extent / steps)
    travel = int(round(speed * steps)) if (dy or dx) else 0
    if travel > free_extent:
        raise ValueError(f"square of side {side} cannot travel {travel} px inside a {height}x{width} frame")

    # Start position drawn so that the whole trajectory stays inside the frame.
    y_range = height - side - (travel if dy else 0)
    x_range = width - side - (travel if dx else 0)
    y0 = int(rng.integers(0, y_range + 1)) + (travel if dy < 0 else 0)
    x0 = int(rng.integers(0, x_range + 1)) + (travel if dx < 0 else 0)

    background = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
    # A checkerboard of two random bright colours makes the square "textured" so motion is visible inside it.
    colours = rng.integers(170, 256, size=(2, 3), dtype=np.uint8)
    checker = (np.add.outer(np.arange(side), np.arange(side)) // 2) % 2
    square = colours[checker]

    video = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        noise = rng.normal(0.0, noise_std, size=(height, width, 3))
        frame = np.clip(background.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        y = y0 + int(round(dy * speed * t))
        x = x0 + int(round(dx * speed * t))
        frame[y : y + side, x : x + side] = square
        video[t] = frame
    return video


def make_turn_frames(
    name: str,
    num_frames: int = 8,
    size: tuple[int, int] = (32, 32),
    rng: np.random.Generator | None = None,
    square_size: int | None = None,
    noise_std: float = 8.0,
) -> np.ndarray:
    """Render one clip of a textured square that moves one way, then turns and moves another way.

    ``name`` is ``"<first>_then_<second>"`` with two perpendicular directions of :data:`MOTION_CLASSES`, e.g.
    ``right_then_up``. The frame of the turn is random in the middle third of the clip, the speed random, and
    the square lives on a torus (it leaves one side and comes back on the other) from a uniformly random
    start: its position in any single frame is uniform over the frame for every class. ``right_then_up`` and
    ``up_then_right`` contain the same two motions; only their order tells them apart.

    Returns:
        uint8 array ``[T, H, W, 3]``.
    """
    first, _, second = name.partition("_then_")
    if first not in MOTION_CLASSES or second not in MOTION_CLASSES:
        raise ValueError(f"unknown turn class {name!r}; expected '<direction>_then_<direction>' with directions "
                         f"from {MOTION_CLASSES}, e.g. one of {TURN_CLASSES}")
    if num_frames < 3:
        raise ValueError(f"a turn needs at least 3 frames, got {num_frames}")
    rng = rng if rng is not None else np.random.default_rng()
    height, width = size
    side = square_size if square_size is not None else max(4, min(height, width) // 4)
    speed = rng.uniform(0.5, 1.0) * min(height, width) / (num_frames - 1)  # 1/2 to 1 frame size per clip
    turn = int(rng.integers(num_frames // 3, (2 * num_frames) // 3 + 1))  # last frame of the first motion
    steps = np.array([_DIRECTIONS[first] if t < turn else _DIRECTIONS[second] for t in range(num_frames - 1)])
    path = np.concatenate([[[0.0, 0.0]], np.cumsum(steps * speed, axis=0)])
    return _render_torus(rng.uniform(0, [height, width]) + path, size, side, rng, noise_std)


def _render_torus(
    track: np.ndarray, size: tuple[int, int], side: int, rng: np.random.Generator, noise_std: float
) -> np.ndarray:
    """Frames of a textured square whose top-left corner follows ``track`` ``[T, (y, x)]`` on a torus."""
    height, width = size
    background = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
    colours = rng.integers(170, 256, size=(2, 3), dtype=np.uint8)
    checker = (np.add.outer(np.arange(side), np.arange(side)) // 2) % 2
    square = colours[checker]
    video = np.empty((len(track), height, width, 3), dtype=np.uint8)
    for t, (y, x) in enumerate(np.round(track).astype(int)):
        noise = rng.normal(0.0, noise_std, size=(height, width, 3))
        frame = np.clip(background.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        rows, cols = (y + np.arange(side)) % height, (x + np.arange(side)) % width  # wraps around the edges
        frame[np.ix_(rows, cols)] = square
        video[t] = frame
    return video


def _count_for_split(num_per_class: int | Mapping[str, int], split: str) -> int:
    if isinstance(num_per_class, Mapping):
        return int(num_per_class[split])
    return int(num_per_class)


# x264's mbtree off for generated sets: with it, the same frames encoded to different bytes from process to
# process (10-14 of 128 32x32 videos, decoded pixels off by up to 47; its SIMD code: no-asm=1 also cured it),
# so a generated set (the demo's) and the accuracy trained on it changed from run to run. Only a rate-control
# refinement is lost. (`write_video` itself keeps x264's defaults, which other fixtures' byte layouts rely on.)
_REPRODUCIBLE = {"h264": {"x264-params": "mbtree=0"}}


def make_motion_dataset(
    root: str | os.PathLike[str],
    num_videos_per_class: int | Mapping[str, int] = 8,
    num_frames: int = 16,
    size: tuple[int, int] = (48, 64),
    fps: float = 30,
    seed: int = 0,
    classes: Sequence[str] = MOTION_CLASSES,
    splits: Sequence[str] = ("train", "val"),
    codec: str = "h264",
    gop_size: int = 8,
    max_b_frames: int = 2,
    wrap: bool = False,
) -> SyntheticSplits:
    """Write a labelled motion video dataset: directions (:data:`MOTION_CLASSES`) or turns (:data:`TURN_CLASSES`).

    Layout (class-per-folder per split, plus ``path label`` list files that the list-file dataset reads)::

        root/train/<class>/<class>_00000.mp4
        root/val/<class>/...
        root/train.txt      # "train/left/left_00000.mp4 0" (paths relative to root)
        root/val.txt
        root/classes.txt    # one class name per line, line number = label

    Args:
        root: output directory.
        num_videos_per_class: videos per class, an int for every split or a ``{split: count}`` mapping.
        num_frames: frames per video.
        size: ``(H, W)``, both even.
        fps: frame rate written into the container.
        seed: everything (positions, textures, noise) is a function of the seed.
        classes: class names in label order: motion directions, or turns (``"right_then_up"``...).
        splits: split names; each gets its own folder and list file.
        codec: ``"h264"`` (``.mp4``) or ``"vp9"`` (``.webm``).
        wrap: directions on a torus (see :func:`make_motion_frames`); turns always wrap.

    Returns:
        ``SyntheticSplits(paths={split: list_file}, classes=[...])``.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    extension = _CODECS[codec][1]
    class_names = list(classes)
    atomic_write_text(root / "classes.txt", "".join(f"{name}\n" for name in class_names))
    list_files: dict[str, Path] = {}
    for split_index, split in enumerate(splits):
        lines: list[str] = []
        for label, name in enumerate(class_names):
            for video_index in range(_count_for_split(num_videos_per_class, split)):
                # One independent stream per video so that adding splits or classes does not change others.
                rng = np.random.default_rng([seed, split_index, label, video_index])
                if "_then_" in name:
                    frames = make_turn_frames(name, num_frames=num_frames, size=size, rng=rng)
                else:
                    frames = make_motion_frames(name, num_frames=num_frames, size=size, rng=rng, wrap=wrap)
                relative = Path(split) / name / f"{name}_{video_index:05d}{extension}"
                write_video(
                    root / relative,
                    frames,
                    fps=fps,
                    codec=codec,
                    gop_size=gop_size,
                    max_b_frames=max_b_frames,
                    options=_REPRODUCIBLE.get(codec),
                )
                lines.append(f"{relative.as_posix()} {label}\n")
        list_file = atomic_write_text(root / f"{split}.txt", "".join(lines))
        list_files[split] = list_file
    return SyntheticSplits(paths=list_files, classes=class_names)


def make_shape_image(
    shape: str, size: tuple[int, int] = (32, 32), rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render one ``uint8 [H, W, 3]`` image of a filled ``square``, ``circle`` or ``triangle`` on noise.

    Colour, position and scale are random so only the shape identifies the class.
    """
    if shape not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPE_CLASSES}")
    rng = rng if rng is not None else np.random.default_rng()
    height, width = size
    image = rng.integers(0, 100, size=(height, width, 3), dtype=np.uint8)
    radius = rng.uniform(0.2, 0.35) * min(height, width)
    cy = rng.uniform(radius, height - radius)
    cx = rng.uniform(radius, width - radius)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    if shape == "square":
        mask = (np.abs(yy - cy) <= radius * 0.8) & (np.abs(xx - cx) <= radius * 0.8)
    elif shape == "circle":
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    else:  # upward triangle: below the apex, inside the two slanted edges
        top, bottom = cy - radius, cy + radius
        half_width = (yy - top) / (bottom - top) * radius
        mask = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)
    image[mask] = rng.integers(150, 256, size=3, dtype=np.uint8)
    return image


def make_image_dataset(
    root: str | os.PathLike[str],
    num_images_per_class: int | Mapping[str, int] = 16,
    size: tuple[int, int] = (32, 32),
    seed: int = 0,
    classes: Sequence[str] = SHAPE_CLASSES,
    splits: Sequence[str] = ("train", "val"),
) -> SyntheticSplits:
    """Write a tiny class-per-folder PNG dataset (shape classification) for the 2D configs.

    Layout: ``root/<split>/<class>/<class>_00000.png`` (the ImageNet / torchvision ``ImageFolder`` layout).

    Returns:
        ``SyntheticSplits(paths={split: root/split}, classes=[...])``.
    """
    from PIL import Image

    root = Path(root)
    class_names = list(classes)
    split_dirs: dict[str, Path] = {}
    for split_index, split in enumerate(splits):
        for label, name in enumerate(class_names):
            class_dir = root / split / name
            class_dir.mkdir(parents=True, exist_ok=True)
            for image_index in range(_count_for_split(num_images_per_class, split)):
                rng = np.random.default_rng([seed, split_index, label, image_index])
                Image.fromarray(make_shape_image(name, size=size, rng=rng)).save(
                    class_dir / f"{name}_{image_index:05d}.png"
                )
        split_dirs[split] = root / split
    return SyntheticSplits(paths=split_dirs, classes=class_names)


# ------------------------------------------------------------------------------------ generated data roots

SYNTHETIC_MARKER = "synthetic.json"


class SyntheticRootError(ValueError):
    """A folder that cannot receive a generated set: it holds files this library did not write."""


def _generated_files(kind: str, counts: Mapping[str, int], classes: Sequence[str], extension: str) -> list[str]:
    """Relative paths of every file a generator writes for these settings (what a re-generation replaces)."""
    files = [] if kind == "shapes" else ["classes.txt"]
    for split, count in counts.items():
        if kind != "shapes":
            files.append(f"{split}.txt")
        for name in classes:
            files += [f"{split}/{name}/{name}_{i:05d}{extension}" for i in range(count)]
    return files


def prepare_synthetic_root(
    root: str | os.PathLike[str],
    settings: Mapping[str, object],
    dataset_files: Sequence[str] = (),
) -> str:
    """Generate a synthetic set into ``root`` unless it is already there; never overwrite a foreign file.

    ``settings``: ``kind`` (``motion``, ``turns`` or ``shapes``), ``num_per_class``, ``num_val_per_class``,
    ``num_frames``, ``size``, ``fps``, ``seed``. The marker ``root/synthetic.json`` records the settings and
    the files written, so a second call with the same settings reuses them, and one with other settings
    replaces exactly those files. A root is used as follows:

    * missing or empty: generated, returns ``"generated"``;
    * holding this library's marker: reused (``"reused"``) or regenerated (``"generated"``);
    * holding all of ``dataset_files`` (e.g. a user's ``train.txt`` and ``val.txt``) but no marker: a dataset
      of the user's own, left untouched, returns ``"existing"``;
    * anything else: :class:`SyntheticRootError` naming the folder (writing there could destroy data).
    """
    root = Path(root)
    kind = str(settings["kind"])
    marker = root / SYNTHETIC_MARKER
    record = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in settings.items()}
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError):
            previous = None
        if not isinstance(previous, dict):
            raise SyntheticRootError(f"{marker} is damaged; delete the folder {root} to generate the set again")
        # Markers of earlier versions hold the settings only; their files follow from the settings.
        old_settings = previous.get("settings", previous)
        if old_settings == record and previous.get("complete", True):
            return "reused"
        old_files = previous.get("files")
        if old_files is None:  # a marker of the first version: four bounded directions
            old_files = _synthetic_layout(old_settings, legacy=True)
        for relative in old_files:  # only what this library wrote there
            (root / relative).unlink(missing_ok=True)
    elif root.exists():
        if not root.is_dir():
            raise SyntheticRootError(f"data.root {str(root)!r} is a file, not a folder")
        if dataset_files and all((root / f).exists() for f in dataset_files):
            return "existing"
        present = sorted(p.name for p in root.iterdir())
        if present:
            shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
            raise SyntheticRootError(
                f"data.root {str(root)!r} is not empty ({shown}) and holds no set generated by hiera-video "
                f"(no {SYNTHETIC_MARKER}): refusing to generate the synthetic set there, which would overwrite "
                "files it did not write. Give an empty or new folder for the generated set, or train on the "
                f"data in that folder with data.synthetic=null (it needs {', '.join(dataset_files) or 'list files'})"
            )
    files = _synthetic_layout(record)
    root.mkdir(parents=True, exist_ok=True)
    # Written first: a generation killed half-way is recognised as ours next time and redone.
    atomic_write_text(marker, json.dumps({"settings": record, "files": files, "complete": False}))
    counts = {"train": int(record["num_per_class"]), "val": int(record["num_val_per_class"])}
    size = (int(record["size"][0]), int(record["size"][1]))
    if kind == "shapes":
        make_image_dataset(root, num_images_per_class=counts, size=size, seed=int(record["seed"]))
    else:
        # gop_size 8: a random clip start decodes at most 7 frames it does not use.
        make_motion_dataset(root, num_videos_per_class=counts, num_frames=int(record["num_frames"]), size=size,
                            fps=float(record["fps"]), seed=int(record["seed"]), classes=_classes_of(kind), wrap=True)
    atomic_write_text(marker, json.dumps({"settings": record, "files": files, "complete": True}))
    return "generated"


def _classes_of(kind: str) -> tuple[str, ...]:
    return {"motion": COMPASS_CLASSES, "turns": TURN_CLASSES, "shapes": SHAPE_CLASSES}[kind]


def _synthetic_layout(settings: Mapping[str, object], legacy: bool = False) -> list[str]:
    kind = str(settings.get("kind", "motion"))
    counts = {"train": int(settings["num_per_class"]), "val": int(settings["num_val_per_class"])}
    classes = MOTION_CLASSES if legacy and kind == "motion" else _classes_of(kind)
    return _generated_files(kind, counts, classes, ".png" if kind == "shapes" else ".mp4")

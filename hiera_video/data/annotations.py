"""Annotation formats → lists of :class:`VideoRecord` (path, label, optional verified frame count / fps).

Supported:

* ``path label`` list files (SlowFast, VideoMAE, mmaction2). Separated by whitespace, split on the *last*
  whitespace so paths may contain spaces; a line whose last token is not an integer is an unlabeled path
  (label ``-1``). Tab-separated lines ``path<TAB>label<TAB>num_frames<TAB>fps`` (what ``prepare`` writes)
  carry the verified frame count and frame rate. Blank lines and lines starting with ``#`` are skipped.
  Relative paths are resolved against ``root`` (default: the list file's folder).
* The official Kinetics-400/600/700 CSVs (``label,youtube_id,time_start,time_end,split[,is_cc]``; test CSVs
  without ``label`` give label ``-1``). The file of a row is ``{youtube_id}_{time_start:06d}_{time_end:06d}``
  with extension ``.mp4`` (or ``.mkv`` / ``.webm``, as youtube-dl sometimes writes) in one of the layouts the
  common downloaders produce (naming: ``construct_video_filename`` of ActivityNet's
  ``Crawler/Kinetics/download.py``, ``'%s_%s_%s.mp4' % (youtube_id, '%06d' % start, '%06d' % end)`` in
  ``output_dir/<label>/``, and mmaction2's copy of it in ``tools/data/kinetics/download.py``):

  - ``"split"``: ``root/<split>/<file>`` (cvdfoundation/kinetics-dataset tarballs; ``val`` may be named
    ``val``, ``validate`` or ``validation``),
  - ``"label"``: ``root/<label>/<file>`` (ActivityNet crawler; label with spaces or with underscores),
  - ``"split_label"``: ``root/<split>/<label>/<file>`` (mmaction2 / per-split crawler output),
  - ``"flat"``: ``root/<file>``.

  ``layout="auto"`` finds the layout from the first rows whose file exists.
* A class-per-folder tree ``root/<class>/<video>`` (classes sorted by name).
* Something-Something v2: ``labels.json`` (``{"Template text": "index"}``) + ``train.json`` /
  ``validation.json`` (``[{"id": ..., "template": "Putting [something] on [something]"}]``) / ``test.json``
  (ids only, label ``-1``); brackets are stripped from templates; files are ``root/<id>.webm``.
* Class names: a text file (one name per line, line number = index) or JSON (``{"name": index}`` as SlowFast
  writes, or a list).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IMAGE_EXTENSIONS",
    "KINETICS_LAYOUTS",
    "VIDEO_EXTENSIONS",
    "VideoRecord",
    "kinetics_file_name",
    "read_class_names",
    "read_kinetics_csv",
    "read_list_file",
    "read_ssv2",
    "scan_class_folders",
    "ssv2_template_to_label",
    "write_list_file",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ogv")
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
KINETICS_LAYOUTS: tuple[str, ...] = ("split", "label", "split_label", "flat")
_SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train", "training"),
    "val": ("val", "validate", "validation", "valid"),
    "validate": ("validate", "val", "validation", "valid"),
    "test": ("test", "testing"),
}


@dataclass(frozen=True)
class VideoRecord:
    """One sample: an absolute ``path``, a ``label`` (-1 if unlabeled) and, when a verified list provides
    them, the decoded ``num_frames`` and ``fps``."""

    path: str
    label: int = -1
    num_frames: int | None = None
    fps: float | None = None


def _resolve(path: str, root: Path) -> str:
    return path if os.path.isabs(path) else str(root / path)


def _parse_int(token: str) -> int | None:
    try:
        return int(token)
    except ValueError:
        return None


def read_list_file(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> list[VideoRecord]:
    """Read a ``path label`` list file (see the module docstring for the accepted variants).

    Args:
        path: the list file.
        root: directory relative paths are resolved against; default the list file's folder.

    Returns:
        Records in file order.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"list file not found: '{path}'")
    base = Path(root) if root is not None else path.parent
    records: list[VideoRecord] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, raw_line in enumerate(handle, start=1):
            line = raw_line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                records.append(_parse_tab_line(line, base, path, line_number))
                continue
            stripped = line.strip()
            parts = stripped.rsplit(None, 1)  # split on the LAST whitespace: paths may contain spaces
            label = _parse_int(parts[1]) if len(parts) == 2 else None
            if label is None:
                records.append(VideoRecord(_resolve(stripped, base), -1))
            else:
                records.append(VideoRecord(_resolve(parts[0], base), label))
    return records


def _parse_tab_line(line: str, base: Path, list_path: Path, line_number: int) -> VideoRecord:
    columns = line.split("\t")
    try:
        label = int(columns[1]) if len(columns) > 1 and columns[1] != "" else -1
        num_frames = int(columns[2]) if len(columns) > 2 and columns[2] != "" else None
        fps = float(columns[3]) if len(columns) > 3 and columns[3] != "" else None
    except ValueError as error:
        raise ValueError(f"{list_path}:{line_number}: cannot parse {line!r} ({error})") from error
    return VideoRecord(_resolve(columns[0], base), label, num_frames, fps)


def write_list_file(
    path: str | os.PathLike[str],
    records: Iterable[VideoRecord],
    root: str | os.PathLike[str] | None = None,
    with_metadata: bool = True,
) -> Path:
    """Write records as a list file.

    ``with_metadata=True`` writes tab-separated ``path<TAB>label<TAB>num_frames<TAB>fps`` lines (readable by
    :func:`read_list_file`); otherwise plain ``path label`` lines, readable by SlowFast/VideoMAE too. Paths
    under ``root`` (default: the list file's folder) are written relative to it.
    """
    path = Path(path)
    base = Path(root) if root is not None else path.parent
    lines = []
    for record in records:
        try:
            shown = str(Path(record.path).relative_to(base))
        except ValueError:
            shown = record.path
        if with_metadata:
            if "\t" in shown:
                raise ValueError(f"cannot write a path containing a tab: {shown!r}")
            frames = "" if record.num_frames is None else str(record.num_frames)
            fps = "" if record.fps is None else f"{record.fps:.6g}"
            lines.append(f"{shown}\t{record.label}\t{frames}\t{fps}\n")
        else:
            lines.append(f"{shown} {record.label}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
    return path


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Class names in label order from a text file (one per line) or JSON (``{name: index}`` or a list)."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, list):
            return [str(name) for name in data]
        by_index = sorted(((int(index), str(name)) for name, index in data.items()))
        if [index for index, _ in by_index] != list(range(len(by_index))):
            raise ValueError(f"class indices in {path} are not 0..{len(by_index) - 1}")
        return [name for _, name in by_index]
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [name for name in names if name]


def _class_list(classes: Sequence[str] | str | os.PathLike[str] | None) -> list[str] | None:
    if classes is None:
        return None
    if isinstance(classes, (str, os.PathLike)):
        return read_class_names(classes)
    return list(classes)


def kinetics_file_name(youtube_id: str, time_start: float | str, time_end: float | str) -> str:
    """``{youtube_id}_{time_start:06d}_{time_end:06d}`` (no extension), the Kinetics downloaders' naming."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def _label_dirs(label: str) -> tuple[str, ...]:
    variants = [label, label.replace(" ", "_"), label.replace('"', ""), label.replace('"', "").replace(" ", "_")]
    return tuple(dict.fromkeys(variants))


def _kinetics_candidates(root: Path, layout: str, split: str, label: str, stem: str) -> list[Path]:
    splits = _SPLIT_ALIASES.get(split, (split,)) if split else ("",)
    labels = _label_dirs(label) if label else ("",)
    if layout == "split":
        folders = [root / s for s in splits]
    elif layout == "label":
        folders = [root / lab for lab in labels]
    elif layout == "split_label":
        folders = [root / s / lab for s in splits for lab in labels]
    elif layout == "flat":
        folders = [root]
    else:
        raise ValueError(f"unknown Kinetics layout {layout!r}; expected 'auto' or one of {KINETICS_LAYOUTS}")
    return [folder / stem for folder in folders]


def _find_with_extension(stem_path: Path, extensions: Sequence[str]) -> Path | None:
    for extension in extensions:
        candidate = stem_path.with_name(stem_path.name + extension)
        if candidate.is_file():
            return candidate
    return None


def read_kinetics_csv(
    csv_path: str | os.PathLike[str],
    root: str | os.PathLike[str],
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    layout: str = "auto",
    extensions: Sequence[str] = (".mp4", ".mkv", ".webm"),
    missing: str = "skip",
) -> tuple[list[VideoRecord], list[str]]:
    """Read an official Kinetics CSV and resolve each row to a video file.

    Args:
        csv_path: ``train.csv`` / ``validate.csv`` / ``test.csv`` of K400/600/700.
        root: dataset root holding the videos (see the module docstring for layouts).
        classes: class names in label order (list, or a class file); default the sorted labels of this CSV.
            Pass the training classes when reading a validation/test CSV of a subset.
        layout: ``"auto"`` or one of :data:`KINETICS_LAYOUTS`.
        extensions: file extensions to try, in order.
        missing: rows whose file is absent (Kinetics always has some): ``"skip"`` (logged count),
            ``"keep"`` (record kept with the ``.mp4`` path; the dataset counts it as a failure) or ``"error"``.

    Returns:
        ``(records, class_names)``.
    """
    if missing not in ("skip", "keep", "error"):
        raise ValueError(f"missing must be 'skip', 'keep' or 'error', got {missing!r}")
    csv_path, root = Path(csv_path), Path(root)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"youtube_id", "time_start", "time_end"} <= set(rows[0]):
        raise ValueError(f"{csv_path} is not a Kinetics CSV (columns {list(rows[0])})")
    has_labels = bool(rows) and "label" in rows[0]
    class_names = _class_list(classes)
    if class_names is None:
        class_names = sorted({row["label"] for row in rows}) if has_labels else []
    class_index = {name: index for index, name in enumerate(class_names)}

    def row_fields(row: dict[str, str]) -> tuple[str, str, str]:
        stem = kinetics_file_name(row["youtube_id"], row["time_start"], row["time_end"])
        return row.get("split", "") or "", row.get("label", "") or "", stem

    layouts = KINETICS_LAYOUTS if layout == "auto" else (layout,)
    chosen = None
    for row in rows[:500] if layout == "auto" else []:
        split, label, stem = row_fields(row)
        for candidate_layout in layouts:
            if any(
                _find_with_extension(stem_path, extensions)
                for stem_path in _kinetics_candidates(root, candidate_layout, split, label, stem)
            ):
                chosen = candidate_layout
                break
        if chosen:
            break
    if layout != "auto":
        chosen = layout
    if chosen is None:
        if rows and missing != "keep":
            raise FileNotFoundError(
                f"no video of {csv_path} found under '{root}' in any layout {KINETICS_LAYOUTS} "
                f"(first expected name: {row_fields(rows[0])[2]}{extensions[0]})"
            )
        chosen = "split"
    logger.info("Kinetics layout of %s: %s", root, chosen)

    records: list[VideoRecord] = []
    num_missing = 0
    for row in rows:
        split, label_name, stem = row_fields(row)
        if has_labels:
            if label_name not in class_index:
                raise ValueError(f"label {label_name!r} of {csv_path} is not in the class list")
            label = class_index[label_name]
        else:
            label = -1
        candidates = _kinetics_candidates(root, chosen, split, label_name, stem)
        found = next((p for p in (_find_with_extension(c, extensions) for c in candidates) if p), None)
        if found is None:
            num_missing += 1
            if missing == "error":
                raise FileNotFoundError(f"Kinetics video missing: {candidates[0]}{extensions[0]}")
            if missing == "skip":
                continue
            found = candidates[0].with_name(candidates[0].name + extensions[0])
        records.append(VideoRecord(str(found), label))
    if num_missing:
        logger.warning(
            "%d of %d videos of %s are missing under %s (%s)", num_missing, len(rows), csv_path, root, missing
        )
    return records, class_names


def scan_class_folders(
    root: str | os.PathLike[str],
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    classes: Sequence[str] | str | os.PathLike[str] | None = None,
    allow_missing: bool = False,
) -> tuple[list[VideoRecord], list[str]]:
    """Records of a ``root/<class>/<file>`` tree (files found recursively below each class folder).

    Args:
        root: dataset root.
        extensions: file extensions to include (lower-case compare).
        classes: class names in label order; default the sorted sub-folder names.
        allow_missing: a class of ``classes`` without a folder has no samples here (a validation split
            lacking a class; labels keep the positions in ``classes``) instead of raising.

    Returns:
        ``(records sorted by class then path, class_names)``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: '{root}'")
    class_names = _class_list(classes)
    if class_names is None:
        class_names = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not class_names:
        raise ValueError(f"no class folders under '{root}'")
    wanted = {extension.lower() for extension in extensions}
    records = []
    for label, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            if allow_missing:
                continue
            raise FileNotFoundError(f"class folder missing: '{folder}'")
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in wanted:
                records.append(VideoRecord(str(file), label))
    return records, class_names


def ssv2_template_to_label(template: str) -> str:
    """``"Putting [something] on [something]"`` → ``"Putting something on something"``."""
    return template.replace("[", "").replace("]", "")


def read_ssv2(
    annotation_json: str | os.PathLike[str],
    labels_json: str | os.PathLike[str],
    root: str | os.PathLike[str],
    extension: str = "auto",
) -> tuple[list[VideoRecord], list[str]]:
    """Read Something-Something v2's official annotations.

    Args:
        annotation_json: ``something-something-v2-{train,validation,test}.json``.
        labels_json: ``something-something-v2-labels.json`` (``{"Template": "index"}``).
        root: folder with ``<id>.webm``.
        extension: video file extension; ``"auto"``: ``.webm`` as published, or the first of
            :data:`VIDEO_EXTENSIONS` that exists for the first entries (sets re-encoded to ``.mp4``).

    Returns:
        ``(records, class_names)``; test entries (no template) get label ``-1``.
    """
    labels = json.loads(Path(labels_json).read_text(encoding="utf-8"))
    class_index = {name: int(index) for name, index in labels.items()}
    class_names = [name for name, _ in sorted(class_index.items(), key=lambda item: item[1])]
    entries = json.loads(Path(annotation_json).read_text(encoding="utf-8"))
    root = Path(root)
    if extension == "auto":
        extension = _ssv2_extension(root, [str(entry["id"]) for entry in entries[:100]])
    records = []
    for entry in entries:
        if "template" in entry:
            name = ssv2_template_to_label(entry["template"])
            if name not in class_index:
                raise ValueError(f"SSv2 template {entry['template']!r} (id {entry['id']}) is not in {labels_json}")
            label = class_index[name]
        else:
            label = -1
        records.append(VideoRecord(str(root / f"{entry['id']}{extension}"), label))
    return records, class_names


def _ssv2_extension(root: Path, ids: list[str]) -> str:
    """The extension of the first SSv2 video found (``.webm`` when none of the first ids exists)."""
    candidates = (".webm", *(e for e in VIDEO_EXTENSIONS if e != ".webm"))
    for video_id in ids:
        for candidate in candidates:
            if (root / f"{video_id}{candidate}").is_file():
                return candidate
    return ".webm"

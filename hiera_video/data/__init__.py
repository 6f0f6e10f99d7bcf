"""Video and image data layer: readers, clip samplers, datasets, transforms, MixUp/CutMix, synthetic data.

Small composable pieces::

    reader = open_video(path)                      # frame-exact decord / PyAV reader
    indices = RandomClipSampler(16, 4)(len(reader), reader.fps, rng)   # [K, T]
    frames = reader.get_frames(indices.reshape(-1))                    # uint8 [K*T, H, W, C]
    clip = VideoTrainTransform()(frames[:16])                          # float [C, T, 224, 224]

or all at once with :class:`VideoDataset` (:class:`TarShardVideoDataset` for WebDataset-style tar shards,
local or on any fsspec filesystem; :func:`write_shards` makes them), or clip by clip over videos of any
length with :class:`WindowedClipReader` / :class:`ClipStream` (feature extraction). Nothing here imports
the models.
"""

from hiera_video.allocator import keep_freed_memory
from hiera_video.data.annotations import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    VideoRecord,
    kinetics_file_name,
    read_class_names,
    read_kinetics_csv,
    read_list_file,
    read_ssv2,
    scan_class_folders,
    write_list_file,
)
from hiera_video.data.clip_sampling import (
    ClipSampler,
    RandomClipSampler,
    SegmentClipSampler,
    SlidingClipSampler,
    UniformClipSampler,
    VideoTooShortError,
    clip_step,
)
from hiera_video.data.datasets import (
    EvalBatch,
    FailureReport,
    ImageFolderDataset,
    VideoDataset,
    collate_eval,
    collate_repeated,
    sample_seed,
)
from hiera_video.data.mixup import MixupCutmix
from hiera_video.data.rand_augment import FastRandAugment
from hiera_video.data.shards import (
    ShardMember,
    TarShardVideoDataset,
    index_shard,
    is_shard_input,
    list_shards,
    read_member,
    write_shards,
)
from hiera_video.data.streaming import (
    ClipStream,
    FrameTransform,
    MediaItem,
    StillImageReader,
    WindowedClipReader,
    discover_inputs,
    open_media,
    shard_inputs,
)
from hiera_video.data.synthetic import (
    MOTION_CLASSES,
    SHAPE_CLASSES,
    SyntheticSplits,
    make_image_dataset,
    make_motion_dataset,
    make_motion_frames,
    make_shape_image,
    write_video,
)
from hiera_video.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    ImageEvalTransform,
    ImageTrainTransform,
    VideoEvalTransform,
    VideoTrainTransform,
)
from hiera_video.data.video_reader import (
    CorruptVideoError,
    VideoNotFoundError,
    VideoReader,
    VideoReadError,
    available_backends,
    open_video,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "KINETICS_MEAN",
    "KINETICS_STD",
    "MOTION_CLASSES",
    "SHAPE_CLASSES",
    "VIDEO_EXTENSIONS",
    "ClipSampler",
    "ClipStream",
    "CorruptVideoError",
    "EvalBatch",
    "FailureReport",
    "FastRandAugment",
    "FrameTransform",
    "ImageEvalTransform",
    "ImageFolderDataset",
    "ImageTrainTransform",
    "MediaItem",
    "MixupCutmix",
    "RandomClipSampler",
    "SegmentClipSampler",
    "ShardMember",
    "SlidingClipSampler",
    "StillImageReader",
    "SyntheticSplits",
    "TarShardVideoDataset",
    "UniformClipSampler",
    "VideoDataset",
    "VideoEvalTransform",
    "VideoNotFoundError",
    "VideoReadError",
    "VideoReader",
    "VideoRecord",
    "VideoTooShortError",
    "VideoTrainTransform",
    "WindowedClipReader",
    "available_backends",
    "clip_step",
    "collate_eval",
    "collate_repeated",
    "discover_inputs",
    "index_shard",
    "is_shard_input",
    "keep_freed_memory",
    "kinetics_file_name",
    "list_shards",
    "make_image_dataset",
    "make_motion_dataset",
    "make_motion_frames",
    "make_shape_image",
    "open_media",
    "open_video",
    "read_class_names",
    "read_kinetics_csv",
    "read_list_file",
    "read_member",
    "read_ssv2",
    "sample_seed",
    "scan_class_folders",
    "shard_inputs",
    "write_list_file",
    "write_shards",
    "write_video",
]

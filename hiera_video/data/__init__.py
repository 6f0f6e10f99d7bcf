"""Video and image data layer: readers, clip samplers, datasets, transforms and synthetic data."""

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

__all__ = [
    "MOTION_CLASSES",
    "SHAPE_CLASSES",
    "SyntheticSplits",
    "make_image_dataset",
    "make_motion_dataset",
    "make_motion_frames",
    "make_shape_image",
    "write_video",
]

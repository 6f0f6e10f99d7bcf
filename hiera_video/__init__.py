"""hiera_video: spatio-temporal Hiera for images and video.

    >>> import hiera_video
    >>> model = hiera_video.create_model("hiera_base_16x224", num_classes=400)
"""

from .models import Hiera, HieraBackbone, HieraConfig, create_model, list_models

__version__ = "0.1.0"


def load_features(directory, *args, **kwargs):
    """Load features written by ``hiera-video extract`` (see `hiera_video.engine.feature_store.load_features`)."""
    from .engine.feature_store import load_features as _load

    return _load(directory, *args, **kwargs)


__all__ = ["Hiera", "HieraBackbone", "HieraConfig", "create_model", "list_models", "load_features", "__version__"]

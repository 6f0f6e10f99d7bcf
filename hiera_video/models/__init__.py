"""Hiera models: the dimension-generic encoder, the MAE, the registry and checkpoint interop.

Modules, lowest first (each imports only those above it, so there is no import cycle): `config`,
`pos_embed`, `registry` (named configs), `sources` (published checkpoints and licences), `format_hf` /
`format_timm` (foreign key names and layouts), `weights` (reading every weight format, `save_pretrained`),
`loading` (config resolution, strict loading), `hiera` / `hiera_mae` (the models), `factory` (`create_model`),
`convert`.
"""

from .config import HieraConfig
from .factory import ARCHITECTURES, build_model, create_model
from .format_hf import export_hf
from .format_timm import export_timm
from .hiera import Hiera, HieraBackbone, reroll, resize_pos_embed, unroll
from .hiera_mae import MAEOutput, MaskedAutoencoderHiera
from .loading import LoadReport, load_pretrained
from .mae_visualize import save_reconstruction
from .registry import get_config, list_models, register_model
from .sources import PretrainedSource, pretrained_sources, pretrained_urls
from .weights import FORMATS, Checkpoint, WeightFormat, read_checkpoint, save_pretrained

__all__ = [
    "ARCHITECTURES", "FORMATS", "Checkpoint", "Hiera", "HieraBackbone", "HieraConfig", "LoadReport", "MAEOutput",
    "MaskedAutoencoderHiera", "PretrainedSource", "WeightFormat", "build_model", "create_model", "export_hf",
    "export_timm", "get_config", "list_models", "load_pretrained", "pretrained_sources", "pretrained_urls",
    "read_checkpoint", "register_model", "reroll", "resize_pos_embed", "save_pretrained", "save_reconstruction",
    "unroll",
]

"""Hiera models: the dimension-generic encoder, the MAE, the registry and checkpoint interop."""

from .checkpoint import export_hf, load_pretrained, read_checkpoint, save_pretrained
from .config import HieraConfig
from .hiera import Hiera, HieraBackbone, reroll, resize_pos_embed, unroll
from .hiera_mae import MAEOutput, MaskedAutoencoderHiera
from .mae_visualize import save_reconstruction
from .registry import create_model, get_config, list_models, pretrained_urls, register_model

__all__ = [
    "Hiera", "HieraBackbone", "HieraConfig", "MAEOutput", "MaskedAutoencoderHiera", "create_model", "export_hf",
    "get_config", "list_models", "load_pretrained", "pretrained_urls", "read_checkpoint", "register_model",
    "reroll", "resize_pos_embed", "save_pretrained", "save_reconstruction", "unroll",
]

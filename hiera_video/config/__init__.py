"""Typed run configuration: one tree of dataclasses, loaded from YAML, overridden from the command line.

A run is described by :class:`Config`, whose sections are :class:`RunConfig` (where outputs go),
:class:`ModelConfig`, :class:`DataConfig`, :class:`AugConfig`, :class:`OptimConfig`, :class:`TrainConfig`,
:class:`MAEConfig`, :class:`EvalConfig` and :class:`ExtractConfig`. Values are resolved in this order, later wins:

1. the dataclass defaults below (for the demo: :func:`demo_config`, so the demo needs no file);
2. a YAML file (``configs/*.yaml``, or any path). A file may start from another with ``base: other.yaml``;
3. command-line overrides ``section.key=value`` (``optim.lr=1e-3``, ``model.overrides.depths=[1,1,2,1]``).
   Values are parsed as YAML scalars/lists and then coerced to the field's declared type.

Unknown keys and mistyped values raise :class:`ConfigError` naming the full dotted key, with close-match
suggestions, before any heavy work starts. The resolved tree is written to ``<run dir>/config.yaml`` by
:func:`save_config` and can be read back with :func:`load_config` to rebuild the same run.
"""
from .loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    find_config,
    list_configs,
    load_config,
    save_config,
    update_config,
)
from .schema import (
    DECODERS,
    AugConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ExtractConfig,
    MAEConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    SyntheticConfig,
    TrainConfig,
    demo_config,
)
from .validate import validate

__all__ = [
    "DECODERS",
    "AugConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExtractConfig",
    "MAEConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "demo_config",
    "find_config",
    "list_configs",
    "load_config",
    "save_config",
    "update_config",
    "validate",
]

"""Where every published Hiera checkpoint lives, in which format, under which licence.

Nothing here downloads anything: fetch a file yourself (or let huggingface_hub fetch a hub id) and pass it to
``create_model(pretrained=...)``. Licences, as their publishers state them:

* the original release (dbolya/hiera, ``dl.fbaipublicfiles.com/hiera``) and its hub repos
  ``facebook/hiera_<size>_224.<tag>``: CC-BY-NC-4.0 (model cards, e.g.
  huggingface.co/facebook/hiera_small_224.mae_in1k_ft_in1k, "Fixed incorrect license" -> cc-by-nc-4.0);
* HF transformers ports ``facebook/hiera-<size>-224[-in1k]-hf``: CC-BY-NC-4.0 (their model cards);
* timm's ports of those weights ``timm/hiera_<size>_224.*``: cc-by-nc-4.0; timm's own abswin training
  ``timm/hiera_small_abswin_256.sbb2_*``: apache-2.0 (timm/models/hiera.py ``default_cfgs``, the ``license``
  timm writes into each hub ``config.json``; the model card huggingface.co/timm/hiera_small_abswin_256.
  sbb2_pd_e200_in12k_ft_in1k states "License: apache-2.0");
* SAM 2 / SAM 2.1 (facebookresearch/sam2, ``dl.fbaipublicfiles.com/segment_anything_2/072824`` and
  ``/092824``; hub ``facebook/sam2-hiera-*``, ``facebook/sam2.1-hiera-*``) and timm's ``timm/sam2_hiera_*``
  ports: Apache-2.0 (the sam2 repository's LICENSE; timm/models/hieradet_sam2.py ``default_cfgs``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath

from .registry import _entry, list_models

CC_BY_NC = "CC-BY-NC-4.0"
APACHE = "Apache-2.0"


@dataclass(frozen=True)
class PretrainedSource:
    """One published checkpoint.

    model: the registry name that loads it; tag: the training recipe (``mae_in1k_ft_in1k``, ``sam2.1``, ...);
    location: a URL (download it) or a hub repo id (``create_model(pretrained=<id>)`` fetches it through
    huggingface_hub); format: what `read_checkpoint` detects it as (``original``, ``hf``, ``timm``, ``sam2``).
    """

    model: str
    tag: str
    location: str
    format: str
    license: str

    @property
    def is_hub_id(self) -> bool:
        return not self.location.startswith(("http://", "https://"))


def _build() -> list[PretrainedSource]:
    out: list[PretrainedSource] = []
    add = lambda *a: out.append(PretrainedSource(*a))  # noqa: E731
    orig = "https://dl.fbaipublicfiles.com/hiera/{}.pth"
    for size in ("tiny", "small", "base", "base_plus", "large", "huge"):
        name, dashed = f"hiera_{size}_224", size.replace("_", "-")
        add(name, "mae_in1k_ft_in1k", orig.format(name), "original", CC_BY_NC)
        add(f"mae_{name}", "mae_in1k", orig.format(f"mae_{name}"), "original", CC_BY_NC)
        add(name, "mae_in1k", orig.format(f"mae_{name}"), "original", CC_BY_NC)  # encoder init (fresh head)
        add(name, "mae_in1k_ft_in1k", f"facebook/{name}.mae_in1k_ft_in1k", "original", CC_BY_NC)
        add(f"mae_{name}", "mae_in1k", f"facebook/{name}.mae_in1k", "original", CC_BY_NC)
        add(name, "mae_in1k_ft_in1k", f"facebook/hiera-{dashed}-224-in1k-hf", "hf", CC_BY_NC)
        add(name, "mae_in1k", f"facebook/hiera-{dashed}-224-hf", "hf", CC_BY_NC)  # HieraModel: no head
        add(name, "mae_in1k_ft_in1k", f"timm/{name}.mae_in1k_ft_in1k", "timm", CC_BY_NC)
        add(name, "mae", f"timm/{name}.mae", "timm", CC_BY_NC)
    for size in ("base", "base_plus", "large", "huge"):
        name = f"hiera_{size}_16x224"
        add(name, "mae_k400_ft_k400", orig.format(name), "original", CC_BY_NC)
        add(f"mae_{name}", "mae_k400", orig.format(f"mae_{name}"), "original", CC_BY_NC)
        add(name, "mae_k400", orig.format(f"mae_{name}"), "original", CC_BY_NC)  # encoder init (fresh head)
        add(name, "mae_k400_ft_k400", f"facebook/{name}.mae_k400_ft_k400", "original", CC_BY_NC)
        add(f"mae_{name}", "mae_k400", f"facebook/{name}.mae_k400", "original", CC_BY_NC)
    for tag in ("sbb2_e200_in12k_ft_in1k", "sbb2_pd_e200_in12k_ft_in1k", "sbb2_e200_in12k", "sbb2_pd_e200_in12k"):
        add("hiera_small_abswin_256", tag, f"timm/hiera_small_abswin_256.{tag}", "timm", APACHE)
    sam = "https://dl.fbaipublicfiles.com/segment_anything_2/{}/{}.pt"
    for size in ("tiny", "small", "base_plus", "large"):
        name, dashed = f"sam2_hiera_{size}", size.replace("_", "-")
        add(name, "sam2", sam.format("072824", name), "sam2", APACHE)
        add(name, "sam2.1", sam.format("092824", f"sam2.1_hiera_{size}"), "sam2", APACHE)
        add(name, "sam2", f"facebook/sam2-hiera-{dashed}", "sam2", APACHE)
        add(name, "sam2.1", f"facebook/sam2.1-hiera-{dashed}", "sam2", APACHE)
        res = "fb_r1024" if size == "large" else "fb_r896"
        add(name, "sam2", f"timm/{name}.{res}", "timm", APACHE)
        add(name, "sam2.1", f"timm/{name}.{res}_2pt1", "timm", APACHE)
    return out


_SOURCES = _build()


def pretrained_sources(pattern: str = "*") -> list[PretrainedSource]:
    """Every published checkpoint of the models matching ``pattern`` (shell-style), e.g.
    ``pretrained_sources("sam2_*")``. Fields: model, tag, location (URL or hub id), format, license."""
    return [s for s in _SOURCES if fnmatch.fnmatch(s.model, pattern)]


def pretrained_urls(name: str | None = None) -> dict[str, str] | dict[str, dict[str, str]]:
    """``{tag: URL}`` of the directly downloadable checkpoints of model ``name`` (the original release's and
    SAM 2's files); with no name, that mapping for every model that has one."""
    if name is None:
        names = sorted({s.model for s in _SOURCES} | set(list_models()))
        return {n: u for n in names if (u := pretrained_urls(n))}
    urls = {s.tag: s.location for s in _SOURCES if s.model == name and not s.is_hub_id}
    if not urls and not any(s.model == name for s in _SOURCES):
        _entry(name)  # unknown names raise with a hint
    return urls


def license_of(source: str) -> PretrainedSource | None:
    """The published checkpoint a hub id or a file (by its published file name) is, if any."""
    src = str(source).rstrip("/")
    for s in _SOURCES:
        if s.is_hub_id and s.location == src:
            return s
    base = PurePosixPath(src.replace("\\", "/")).name
    for s in _SOURCES:
        if not s.is_hub_id and PurePosixPath(s.location).name == base:
            return s
    return None

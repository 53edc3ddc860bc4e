"""timm classification networks by name (``model=timm model.module.net.name=<timm model>``).

Nothing is downloaded: ``pretrained=true`` reads the weights timm would fetch from where
they already are (the Hugging Face hub cache, or the torch hub cache for weights that
timm publishes by URL) and hands that file to timm, which loads it with
``weights_only=True`` and replaces the head for the run's classes. No cached file is a
one-line error naming where to put it; ``pretrained=false`` is a random init.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from src.errors import UserError

# the file names timm's hub weights are published under, in the order timm tries them
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def cached_weights(pretrained_cfg: dict) -> tuple[Path | None, str]:
    """(the cached weight file or None, where it would be) for a timm pretrained config."""
    hub_id = pretrained_cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for file_name in HF_WEIGHT_FILES:
            found = try_to_load_from_cache(repo_id=hub_id, filename=file_name)
            if isinstance(found, str):
                return Path(found), f"the Hugging Face hub cache ({hub_id})"
        return (
            None,
            f"the Hugging Face hub cache as {hub_id}/{HF_WEIGHT_FILES[0]} (huggingface-cli download {hub_id})",
        )
    url = pretrained_cfg.get("url")
    if url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        return (path if path.is_file() else None), str(path)
    return None, "nowhere: timm lists no weights for it"


def build_timm_network(
    name: str, num_classes: int, pretrained: bool = False, key: str = "model.module.net", **kwargs
) -> nn.Module:
    """timm's ``name`` with a ``num_classes`` head; ImageNet-style 3-channel input (the classifier
    repeats a grey channel). ``kwargs`` go to ``timm.create_model`` (e.g. ``drop_rate``)."""
    import timm  # here, not at the top: importing timm's model zoo takes seconds

    if not timm.is_model(name):
        near = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise UserError(
            f"{key}.name={name!r} is not a timm model"
            + (f"; e.g. {', '.join(near)}" if near else "; see timm.list_models()")
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    path, where = cached_weights(pretrained_cfg.to_dict() if pretrained_cfg else {})
    if path is None:
        raise UserError(
            f"{key}.pretrained=true: no cached weights of {name} in {where}; nothing is "
            f"downloaded at run time: put the file there, or set {key}.pretrained=false"
        )
    return timm.create_model(
        name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(path)}, **kwargs
    )

"""Load a model for inference and put it where it runs.

A Hub ID (`org/name@revision`) or folder is pinned to a commit SHA and fetched through `hub.resolve` and `hub.fetch`,
as soup ingredients are. On a CPU the model is loaded in float32. With an accelerator it goes whole onto it when it
fits (one per process under `torchrun`), and is spread by Accelerate (`device_map="auto"`) over the devices and the
CPU when it does not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import distributed
from ..errors import EvaluationError
from .predictors.registry import predictor_for

logger = logging.getLogger(__name__)


def load_tokenizer(tokenizer: Any, *, token: str | bool | None, loader: Callable[[str], Any] | None = None) -> Any:
    """`tokenizer` itself, or the one in a folder or Hub ID (its small files only, at a pinned SHA), read by `loader`
    (`AutoTokenizer.from_pretrained` by default; a predictor may load a processor instead)."""
    if not isinstance(tokenizer, str | os.PathLike):
        return tokenizer
    from ..hub import fetch, resolve

    path = str(tokenizer)
    if not os.path.isdir(path):
        path = str(fetch(resolve(path, token=token), token=token, weights=False))
    if loader is None:
        from transformers import AutoTokenizer

        def loader(folder: str) -> Any:
            return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)

    return loader(path)


def load_model(model: Any, *, kind: str | None, token: str | bool | None) -> tuple[Any, dict[str, Any]]:
    """A loaded model and its provenance; a Hub ID or folder is pinned (`hub.resolve`), fetched and placed."""
    if not isinstance(model, str | os.PathLike):
        name = getattr(model, "name_or_path", "") or type(model).__name__
        return model, {"spec": name, "path": name if os.path.isdir(name) else None}
    from transformers import AutoConfig

    from ..hub import fetch, resolve

    ingredient = resolve(str(model), token=token)
    path = fetch(ingredient, token=token)
    provenance = {**ingredient.provenance(), "path": str(path)}
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=False)
        predictor = predictor_for(config.architectures or [], kind=kind, model_name=str(model))
        return predictor.load(str(path), **placement(path)), provenance
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise EvaluationError(
            f"Model {str(model)!r} needs Python code from its own repo to load (its config.json has an 'auto_map'); "
            "hfsoup never runs code that comes with a model.",
            fix="Evaluate a model whose architecture transformers ships, or, if you have read and trust that code, "
            "load it yourself with trust_remote_code=True and pass the loaded model to hfsoup.evaluate_model.",
        ) from e


def placement(path: Path) -> dict[str, Any]:
    """`from_pretrained` arguments for the model at `path`: float32 on a CPU; with an accelerator, whole on one
    device when it fits, else spread by Accelerate (`device_map="auto"`) over the devices and the CPU."""
    import torch

    if not torch.cuda.is_available():
        return {"dtype": torch.float32}
    processes = distributed.current()
    if processes.world_size > 1:  # One model per process, on that process's device.
        from accelerate import PartialState

        return {"dtype": "auto", "device_map": {"": str(PartialState().device)}}
    size = sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))
    free, _ = torch.cuda.mem_get_info()
    if size * 1.2 < free:  # Room for the activations of a batch too.
        return {"dtype": "auto", "device_map": {"": "cuda:0"}}
    logger.info("Model of %.1f GB does not fit one device; spreading it with device_map='auto'.", size / 1e9)
    return {"dtype": "auto", "device_map": "auto"}


def input_device(model: Any) -> Any:
    """Where inputs go: the device of the input embeddings (with a device map, the first layer's device)."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model.parameters()).device

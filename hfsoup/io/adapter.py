"""LoRA adapters as ingredients: an adapter folder read as the model it makes when merged into its base.

A PEFT LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`) holds, for each adapted module, two small
matrices `lora_A` (r x in) and `lora_B` (out x r); merged, the module's weight is `W + s * B @ A` with
`s = lora_alpha / r` (`lora_alpha / sqrt(r)` under `use_rslora`), `r` and `lora_alpha` per module from
`rank_pattern` / `alpha_pattern`. Tensors of `modules_to_save` (a classifier head) and trained biases are saved whole
and replace the base's. `AdapterReader` reads like a `CheckpointReader` of the merged model, so every soup method, the
compatibility check and the shared-initialization meter see the merged tensors and nothing else changes for them.

Each merged tensor is computed when the engine reads it, and then only the rows of the block it asks for
(`LoraTensor`): `W[rows] + s * B[rows] @ A` in float64, rounded once to float32. So a soup of N adapters holds a few
blocks per adapter, never a merged tensor, and its result is the soup of the merged models (what `peft`'s
`merge_and_unload` gives, to float32 rounding). The plan of what changes is made from the safetensors headers of the
base and the adapter alone (`plan_expansion`), so a config that contradicts its tensors (a rank they do not have) or
a base they do not fit is refused before any weight is downloaded.

Key names: PEFT saves `base_model.model.<module>.lora_A.weight` (embeddings: `<module>.lora_embedding_A`), without
the adapter's name; whole tensors as `base_model.model.<module>.<param>`, in older files with `modules_to_save` (and
the adapter name) inside. `<module>` is the module's path in the model PEFT wrapped; the base checkpoint may name it
with one more or one less leading component (`bert.` in a task model).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import HfsoupError, IngredientConfigError, option
from .checkpoint import CheckpointReader, StructureMap, TensorMeta, WeightsLayout
from .headers import bounded_repr
from .jsonread import parse_json, read_bounded

if TYPE_CHECKING:
    import torch

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_PICKLE_NAME = "adapter_model.bin"
ADAPTER_LAYOUT = WeightsLayout("adapter", (ADAPTER_WEIGHTS_NAME,))

# Bounds on what a config may hold: patterns are regular expressions matched against every module name, so their
# number and length are capped (real configs hold a handful of short ones).
_MAX_PATTERNS = 4096
_MAX_PATTERN_CHARS = 512
_PREFIX = "base_model.model."
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)\.weight$|^(?P<emodule>.+)\.(?P<epart>lora_embedding_[AB])$"
)
_F64 = np.dtype(np.float64)

# Options of LoRA that change what merging means, or that make it impossible: refused by name when set.
_REFUSED = {
    "use_dora": "DoRA rescales each merged row by a learned magnitude over its norm; hfsoup does not merge DoRA",
    "lora_bias": "a bias on lora_B is not merged by hfsoup",
    "target_parameters": "LoRA on bare parameters (target_parameters) is not merged by hfsoup",
    "layer_replication": "layer_replication changes the model's architecture",
    "trainable_token_indices": "trainable token deltas are not merged by hfsoup",
    "alora_invocation_tokens": "an activated LoRA applies only after its invocation tokens and cannot be merged",
}


class InvalidAdapterError(HfsoupError):
    """A LoRA adapter that cannot be merged as its config says: an option hfsoup does not merge, a config that
    contradicts its tensors (a rank they do not have, a module its target_modules do not name), tensors that do not
    fit the base, or a base hfsoup may not read. `problems` lists every problem found."""


@dataclass(frozen=True)
class AdapterConfig:
    """What `adapter_config.json` says about merging (the rest of PEFT's options change nothing once trained).

    Args:
        base (`str`, *optional*): `base_model_name_or_path`: a Hub ID or a path, as PEFT recorded it.
        revision (`str`, *optional*): the base's revision, when PEFT recorded one.
        r (`int`): the rank; `rank_pattern` overrides it per module.
        alpha (`float`): `lora_alpha`; `alpha_pattern` overrides it per module.
        rslora (`bool`): `use_rslora`: the scale is `alpha / sqrt(r)` instead of `alpha / r`.
        fan_in_fan_out (`bool`): the base stores weights as (in, out) (GPT-2's `Conv1D`); decides square matrices.
    """

    base: str | None
    revision: str | None
    r: int
    alpha: float
    rslora: bool = False
    fan_in_fan_out: bool = False
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    modules_to_save: tuple[str, ...] = ()
    target_modules: tuple[str, ...] | str | None = None
    exclude_modules: tuple[str, ...] | str | None = None
    layers_to_transform: tuple[int, ...] | None = None
    layers_pattern: tuple[str, ...] = ()

    @classmethod
    def read(cls, path: Path, *, where: str) -> AdapterConfig:
        """Parse and check `path`, listing every problem at once (`InvalidAdapterError`)."""
        try:
            data = parse_json(read_bounded(path))
        except (OSError, ValueError) as e:
            raise IngredientConfigError(
                f"{where}: {ADAPTER_CONFIG_NAME} is not valid JSON ({type(e).__name__})."
            ) from None
        if not isinstance(data, dict):
            raise IngredientConfigError(f"{where}: {ADAPTER_CONFIG_NAME} is not a JSON object.")
        return cls.from_dict(data, where=where)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str) -> AdapterConfig:
        problems: list[str] = []

        def get(key: str, kinds: tuple[type, ...], default: Any = None, *, required: bool = False) -> Any:
            value = data.get(key, default)
            if value is None and not required:
                return default
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                problems.append(f"{key} is {bounded_repr(value)}, expected {' or '.join(k.__name__ for k in kinds)}")
                return default
            return value

        peft_type = data.get("peft_type")
        if peft_type != "LORA":
            raise InvalidAdapterError(
                f"{where} is a PEFT adapter of type {bounded_repr(peft_type)}; hfsoup merges LoRA adapters only.",
                fix="Merge it with peft (merge_and_unload), save the merged model, and use that folder.",
            )
        for key, why in _REFUSED.items():
            if data.get(key) not in (None, False, [], {}):
                problems.append(f"{key} is set: {why}")
        r = get("r", (int,), required=True)
        if isinstance(r, int) and r <= 0:
            problems.append(f"r is {r}, expected a positive rank")
        alpha = get("lora_alpha", (int, float), required=True)
        if isinstance(alpha, float) and not math.isfinite(alpha):
            problems.append(f"lora_alpha is {alpha}, expected a finite number")
        rank_pattern = _pattern(data, "rank_pattern", int, problems)
        alpha_pattern = _pattern(data, "alpha_pattern", (int, float), problems)
        if any(v <= 0 for v in rank_pattern.values()):
            problems.append("rank_pattern holds a rank that is not positive")
        modules = _names(data, "modules_to_save", problems, allow_str=False)
        targets = _names(data, "target_modules", problems, allow_str=True)
        excluded = _names(data, "exclude_modules", problems, allow_str=True)
        layers = data.get("layers_to_transform")
        if isinstance(layers, int) and not isinstance(layers, bool):
            layers = [layers]
        if layers is not None and not (
            isinstance(layers, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in layers)
        ):
            problems.append(f"layers_to_transform is {bounded_repr(layers)}, expected an integer or a list of them")
            layers = None
        layers_pattern = _names(data, "layers_pattern", problems, allow_str=True)
        base = get("base_model_name_or_path", (str,))
        revision = get("revision", (str,))
        rslora = get("use_rslora", (bool,), False)
        fan_in_fan_out = get("fan_in_fan_out", (bool,), False)
        if problems:
            raise InvalidAdapterError(
                f"{where}: {ADAPTER_CONFIG_NAME} cannot be merged as it stands ({len(problems)} problems).",
                fix="Merge it with peft (merge_and_unload) and use the merged model, or fix the config.",
                problems=problems,
            )
        return cls(
            base=base or None,
            revision=revision or None,
            r=r,
            alpha=float(alpha),
            rslora=rslora,
            fan_in_fan_out=fan_in_fan_out,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            modules_to_save=tuple(modules or ()),
            target_modules=targets if isinstance(targets, str) or targets is None else tuple(targets),
            exclude_modules=excluded if isinstance(excluded, str) or excluded is None else tuple(excluded),
            layers_to_transform=None if not layers else tuple(layers),
            layers_pattern=(layers_pattern,) if isinstance(layers_pattern, str) else tuple(layers_pattern or ()),
        )

    def rank(self, module: str) -> int:
        """The rank PEFT gave `module` (its path in the wrapped model): `rank_pattern`'s first matching key, or r."""
        return self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r)

    def scale(self, module: str) -> float:
        """The merge's `s` for `module`, exactly as PEFT's `LoraLayer.update_layer` sets `scaling`."""
        r = self.rank(module)
        alpha = self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.alpha)
        return alpha / math.sqrt(r) if self.rslora else alpha / r

    def targets(self, module: str) -> bool:
        """Whether the config's `target_modules`, `exclude_modules` and `layers_to_transform` name `module`, by
        PEFT's rules (`check_target_module_exists`); True when the config lists no targets (`all-linear`)."""
        if _listed(self.exclude_modules, module):
            return False
        if self.target_modules is None or self.target_modules == "all-linear":
            return True
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, module) is not None
        if module in self.target_modules:
            return True
        if not any(module.endswith(f".{t}") for t in self.target_modules):
            return False
        if not self.layers_to_transform:
            return True
        patterns = [rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\." for p in self.layers_pattern] or [r".*?\.[^.]*\.(?P<idx>\d+)\."]
        for pattern in patterns:
            match = re.match(pattern, module)
            if match is not None:
                return int(match.group("idx")) in self.layers_to_transform
        return False


def _pattern_key(pattern: dict[str, Any], module: str) -> str:
    """PEFT's `get_pattern_key`: the first key that matches the end of `module` at a name boundary."""
    for key in pattern:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def _listed(names: tuple[str, ...] | str | None, module: str) -> bool:
    if not names:
        return False
    if isinstance(names, str):
        return re.fullmatch(names, module) is not None
    return module in names or any(module.endswith(f".{n}") for n in names)


# A group holding a repetition, itself repeated (`(a+)+`, `(\w*)*`, `(x{2,})+`): the shape of pattern that backtracks
# exponentially, and Python's `re` has no time limit. PEFT's own patterns are names and simple alternations.
_NESTED_REPEAT = re.compile(r"\([^()]*(?:[*+]|\{\d*,?\d*\})[^()]*\)\s*(?:[*+]|\{\d*,?\d*\})")


def _checked_pattern(text: object, key: str, problems: list[str]) -> bool:
    if not isinstance(text, str) or len(text) > _MAX_PATTERN_CHARS:
        problems.append(f"{key} holds {bounded_repr(text)}, expected a name or pattern of at most 512 characters")
        return False
    if _NESTED_REPEAT.search(text):
        problems.append(f"{key} holds {bounded_repr(text)}, a repeated group of repetitions, which hfsoup refuses")
        return False
    try:
        re.compile(text)
    except re.error as e:
        problems.append(f"{key} holds {bounded_repr(text)}, which is not a regular expression ({e})")
        return False
    return True


def _pattern(data: dict, key: str, kinds: type | tuple[type, ...], problems: list[str]) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict) or len(value) > _MAX_PATTERNS:
        problems.append(f"{key} is not an object of at most {_MAX_PATTERNS} module patterns")
        return {}
    out = {}
    for k, v in value.items():
        if not _checked_pattern(k, key, problems):
            continue
        if isinstance(v, bool) or not isinstance(v, kinds):
            problems.append(f"{key}[{bounded_repr(k)}] is {bounded_repr(v)}, expected a number")
            continue
        out[k] = v
    return out


def _names(data: dict, key: str, problems: list[str], *, allow_str: bool) -> list[str] | str | None:
    value = data.get(key)
    if value is None:
        return None
    if allow_str and isinstance(value, str):
        return value if _checked_pattern(value, key, problems) else None
    if not isinstance(value, list) or len(value) > _MAX_PATTERNS:
        problems.append(f"{key} is {bounded_repr(value)}, expected a list of module names")
        return None
    return [v for v in value if _checked_pattern(v, key, problems)]


@dataclass(frozen=True)
class LoraDelta:
    """How one base tensor is adapted: `W + scale * left @ right`, with `left` and `right` read from the adapter's
    `a` and `b` tensors (`layout`: `linear` B @ A; `transposed` (B @ A)^T, for embeddings and `Conv1D`; `conv` the
    kernel dims of A folded into its columns)."""

    module: str
    a: str
    b: str
    layout: str
    scale: float


@dataclass
class Expansion:
    """What an adapter makes of its base, from headers alone: the merged model's tensors and how each is made."""

    structure: StructureMap
    stored: dict[str, str]  # the dtype the merged model stores each tensor in (the base's)
    deltas: dict[str, LoraDelta]  # base tensor name -> its LoRA
    replaced: dict[str, str]  # base tensor name -> the adapter tensor that replaces it whole


def plan_expansion(base: StructureMap, adapter: StructureMap, config: AdapterConfig, *, where: str) -> Expansion:
    """Map every tensor of the adapter onto the base and check it, listing every problem (`InvalidAdapterError`)."""
    problems: list[str] = []
    pairs: dict[str, dict[str, str]] = {}
    whole: dict[str, str] = {}
    for key in adapter:
        bare = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
        match = _LORA_KEY.match(bare)
        if match:
            module = match.group("module") or match.group("emodule")
            part = match.group("part") or match.group("epart")
            pairs.setdefault(module, {})[part] = key
        elif ".lora_" in bare or bare.startswith("lora_"):
            problems.append(f"tensor {bounded_repr(key)} is a LoRA tensor hfsoup does not merge")
        else:
            whole[_saved_module_name(bare)] = key
    deltas: dict[str, LoraDelta] = {}
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}
    for module, parts in sorted(pairs.items()):
        delta, shape_or_problem = _plan_lora(module, parts, base, adapter, config)
        if delta is None:
            problems.append(shape_or_problem)  # type: ignore[arg-type]
            continue
        shapes[module] = shape_or_problem  # type: ignore[assignment]
        deltas[module] = delta
    # A square matrix fits both ways: it is stored (in, out) when the config says so, or when the adapter's other,
    # non-square matrices show this model stores its linear layers that way (GPT-2's Conv1D).
    transposed = config.fan_in_fan_out or any(how == "transposed-shape" for _, how in shapes.values())
    by_name: dict[str, LoraDelta] = {}
    for module, delta in deltas.items():
        name, how = shapes[module]
        layout = delta.layout
        if how == "square" and transposed:
            layout = "transposed"
        by_name[name] = LoraDelta(delta.module, delta.a, delta.b, layout, delta.scale)  # type: ignore[index]
    replaced: dict[str, str] = {}
    for saved, key in sorted(whole.items()):
        name = base_name(saved, base)
        if name is None:
            problems.append(
                f"the adapter's whole tensor {bounded_repr(key)} (a module to save, or a trained bias) has no "
                "counterpart in the base; hfsoup soups the base's tensors, so a head the base lacks cannot be added"
            )
        elif adapter[key].shape != base[name].shape:
            problems.append(
                f"the adapter's {bounded_repr(key)} has shape {list(adapter[key].shape)}, the base's {name!r} "
                f"{list(base[name].shape)}"
            )
        elif not adapter[key].is_float:
            problems.append(f"the adapter's {bounded_repr(key)} is not a float tensor")
        elif name in by_name:
            problems.append(f"the base's {name!r} is both adapted by a LoRA and replaced whole by {bounded_repr(key)}")
        else:
            replaced[name] = key
    if problems:
        raise InvalidAdapterError(
            f"{where}: the adapter does not fit its base as its config describes it ({len(problems)} problems).",
            fix="Check that the adapter was trained on this base and its adapter_config.json is the one saved with "
            f"it; name the right base with {option('base', metavar='MODEL')}.",
            problems=problems,
        )
    structure: StructureMap = dict(base)
    for name in by_name:
        structure[name] = TensorMeta("F64" if base[name].dtype == "F64" else "F32", base[name].shape)
    for name, key in replaced.items():
        structure[name] = adapter[key]
    stored = {name: base[name].dtype for name in (*by_name, *replaced)}
    return Expansion(structure, stored, by_name, replaced)


def _saved_module_name(bare: str) -> str:
    """A whole tensor's name in the model: older PEFT files keep `modules_to_save.<adapter>.` inside it, and a
    trained bias of a LoRA module is its wrapped layer's (`<module>.base_layer.bias`)."""
    parts = [p for p in bare.split(".") if p != "base_layer"]
    if "modules_to_save" in parts:
        i = parts.index("modules_to_save")
        rest = parts[i + 1 :]
        if len(rest) > 1 and not rest[0].isdigit() and rest[0] not in ("weight", "bias"):
            rest = rest[1:]  # `modules_to_save.default.weight`: the adapter's name
        parts = parts[:i] + rest
    return ".".join(parts)


def base_name(name: str, base: StructureMap) -> str | None:
    """The base's name for the merged model's `name`: itself, or with one leading component less (a task model's
    adapter on a bare base) or more (a bare model's adapter on a task model's checkpoint: `bert.`)."""
    if name in base:
        return name
    if "." in name and name.split(".", 1)[1] in base:
        return name.split(".", 1)[1]
    for prefix in sorted({n.split(".", 1)[0] for n in base if "." in n}):
        if f"{prefix}.{name}" in base:
            return f"{prefix}.{name}"
    return None


def _plan_lora(
    module: str, parts: dict[str, str], base: StructureMap, adapter: StructureMap, config: AdapterConfig
) -> tuple[LoraDelta | None, object]:
    """The delta of one module, and (its base tensor name, how its shape matched); or None and the problem."""
    embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
    a_key, b_key = (
        parts.get(p) for p in (("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B"))
    )
    if a_key is None or b_key is None or len(parts) != 2:
        return None, f"module {module!r} has {sorted(parts)} in the adapter, expected one lora_A and one lora_B"
    a, b = adapter[a_key], adapter[b_key]
    if not (a.is_float and b.is_float):
        return None, f"module {module!r}: its LoRA tensors are not float tensors"
    if not config.targets(module):
        return None, (
            f"the adapter holds a LoRA for module {module!r}, which its config's target_modules / "
            "layers_to_transform / exclude_modules do not name: the config does not describe these tensors"
        )
    rank = config.rank(module)
    if len(a.shape) < 2 or len(b.shape) < 2 or a.shape[0] != rank or b.shape[1] != rank:
        return None, (
            f"module {module!r}: the config names rank {rank} (r / rank_pattern), its tensors have shapes "
            f"lora_A {list(a.shape)} and lora_B {list(b.shape)} (rank {a.shape[0] if a.shape else '?'})"
        )
    name = base_name(f"{module}.weight", base)
    if name is None:
        return (
            None,
            f"module {module!r} is adapted, but the base has no {module}.weight (nor with a prefix less or more)",
        )
    w = base[name].shape
    if not base[name].is_float:
        return None, f"module {module!r}: the base's {name!r} is not a float tensor"
    scale = config.scale(module)
    if embedding:  # A (r, num_embeddings), B (dim, r); the weight is (num_embeddings, dim)
        expected, layout, how = (a.shape[1], b.shape[0]), "transposed", "embedding"
    elif len(a.shape) > 2:  # convolution: A (r, in, *kernel), B (out, r, 1, ...)
        if any(d != 1 for d in b.shape[2:]) or len(b.shape) != len(a.shape):
            return None, f"module {module!r}: a convolution LoRA whose lora_B is not a 1x1 kernel is not merged"
        expected, layout, how = (b.shape[0], *a.shape[1:]), "conv", "conv"
    elif len(b.shape) != 2:
        return None, f"module {module!r}: lora_A is a matrix, lora_B {list(b.shape)} is not"
    elif w == (b.shape[0], a.shape[1]):
        expected, layout, how = w, "linear", "square" if w[0] == w[1] else "linear"
    else:  # Conv1D (GPT-2) stores (in, out)
        expected, layout, how = (a.shape[1], b.shape[0]), "transposed", "transposed-shape"
    if tuple(w) != tuple(expected):
        return None, (
            f"module {module!r}: lora_A {list(a.shape)} and lora_B {list(b.shape)} make a "
            f"{list(expected)} update, the base's {name!r} is {list(w)}"
        )
    return LoraDelta(module, a_key, b_key, layout, scale), (name, how)


class AdapterReader:
    """The merged model of a LoRA adapter and its base, read like a `CheckpointReader` (`structure`, `get_array`,
    `get`): untouched tensors are the base's memory-mapped views, adapted ones `LoraTensor`s, computed block by block
    as they are read.

    Args:
        base (`CheckpointReader`): the base model's weights.
        folder (`Path`): the adapter's folder (its `adapter_model.safetensors`).
        config (`AdapterConfig`): its config.
        where (`str`): how errors name the adapter.

    Example:
        ```py
        >>> config = AdapterConfig.read(Path("lora-a/adapter_config.json"), where="lora-a")
        >>> with AdapterReader(CheckpointReader("base/"), Path("lora-a"), config, where="lora-a") as merged:
        ...     w = np.asarray(merged.get_array("bert.encoder.layer.0.attention.self.query.weight"))
        ```
    """

    format = "safetensors"

    def __init__(self, base: CheckpointReader, folder: Path, config: AdapterConfig, *, where: str) -> None:
        self.base = base
        self.adapter = CheckpointReader(folder, layout=ADAPTER_LAYOUT)
        self.expansion = plan_expansion(base.structure, self.adapter.structure, config, where=where)
        self.structure: StructureMap = self.expansion.structure
        self.stored_dtypes = self.expansion.stored

    def is_mapped(self, name: str) -> bool:
        """Never a plain map to read ahead: adapted tensors are computed on read (`CheckpointReader.is_mapped`)."""
        return False

    def release(self, name: str) -> None:
        """Unmap the base's copy of `name` once the soup has read it (`CheckpointReader.release`)."""
        if name in self.base.structure:
            self.base.release(name)

    def get_array(self, name: str) -> np.ndarray | LoraTensor:
        if name in self.expansion.replaced:
            return self.adapter.get_array(self.expansion.replaced[name])
        delta = self.expansion.deltas.get(name)
        if delta is None:
            return self.base.get_array(name)
        a = _widen(self.adapter.get_array(delta.a), self.adapter.structure[delta.a].dtype)
        b = _widen(self.adapter.get_array(delta.b), self.adapter.structure[delta.b].dtype)
        if delta.layout == "linear":
            left, right = b, a
        elif delta.layout == "transposed":
            left, right = a.T, b.T
        else:
            left, right = b.reshape(b.shape[0], -1), a.reshape(a.shape[0], -1)
        meta = self.base.structure[name]
        dtype = np.dtype(np.float64 if self.structure[name].dtype == "F64" else np.float32)
        return LoraTensor(self.base.get_array(name), meta.dtype, left, right, delta.scale, dtype)

    def get(self, name: str) -> torch.Tensor:
        """One merged tensor as a torch tensor (what the selection stage scores with)."""
        if name in self.expansion.replaced:
            return self.adapter.get(self.expansion.replaced[name])
        if name not in self.expansion.deltas:
            return self.base.get(name)
        import torch

        return torch.from_numpy(np.asarray(self.get_array(name)))

    def close(self) -> None:
        self.adapter.close()
        self.base.close()

    def __enter__(self) -> AdapterReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _widen(raw: np.ndarray, code: str) -> np.ndarray:
    from ..soups.kernels import widen

    return np.asarray(widen(raw, code, _F64))


class LoraTensor:
    """`W + scale * left @ right` of shape `W.shape`, computed only for the rows a read asks for.

    Reads as the engine reads a tensor: `reshape(-1)` gives a flat view whose `[start:stop]` computes the rows that
    hold those elements (in float64, rounded once to `dtype`); anything else (`np.asarray`, fancy indexing) computes
    the whole tensor.
    """

    def __init__(
        self, base: np.ndarray, code: str, left: np.ndarray, right: np.ndarray, scale: float, dtype: np.dtype
    ) -> None:
        self._base = base.reshape(left.shape[0], right.shape[1])
        self._code, self._left, self._right, self._scale = code, left, right, scale
        self.shape: tuple[int, ...] = tuple(base.shape)
        self.ndim, self.size, self.dtype = len(self.shape), int(base.size), dtype
        self._cols = right.shape[1]

    def rows(self, first: int, last: int) -> np.ndarray:
        """Rows `first:last` of the merged weight (as a matrix: a convolution's kernel dims folded), in float64."""
        merged = _widen(self._base[first:last], self._code)
        if not merged.flags.writeable:  # a float64 base's own memory map
            merged = merged.copy()
        merged += self._scale * (self._left[first:last] @ self._right)
        return merged

    def flat(self, start: int, stop: int) -> np.ndarray:
        first, last = start // self._cols, -(-stop // self._cols)
        block = self.rows(first, last).reshape(-1)[start - first * self._cols : stop - first * self._cols]
        return block.astype(self.dtype)

    def reshape(self, *shape: Any) -> LoraTensor | _FlatLora | np.ndarray:
        wanted = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], Iterable) else shape
        if wanted in ((-1,), (self.size,)):
            return _FlatLora(self)
        if wanted == self.shape:
            return self
        return np.asarray(self).reshape(*shape)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self)[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self.rows(0, self._left.shape[0]).reshape(self.shape).astype(self.dtype)
        return whole if dtype is None else whole.astype(dtype)


class _FlatLora:
    """A `LoraTensor` seen as one row of elements: what `reshape(-1)` gives."""

    def __init__(self, tensor: LoraTensor) -> None:
        self._tensor = tensor
        self.size, self.dtype, self.ndim, self.shape = tensor.size, tensor.dtype, 1, (tensor.size,)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice) and index.step in (None, 1):
            start, stop, _ = index.indices(self.size)
            return self._tensor.flat(start, max(start, stop))
        return np.asarray(self)[index]

    def reshape(self, *shape: Any) -> Any:
        return self._tensor.reshape(*shape)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return np.asarray(self._tensor, dtype=dtype).reshape(-1)

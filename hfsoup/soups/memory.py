"""How much memory a soup needs, estimated from the safetensors headers before any weight is downloaded.

The streamed methods hold a few blocks (`kernels.BLOCK` elements) per ingredient whatever the model; scoring a
candidate, and the methods that fit or measure on data (learned, greedy, Fisher, RegMean), hold model-sized tensors.
Each method lists what it holds (`SoupMethod.memory_parts`, in `Part`s) from a `MemoryContext`: the first
ingredient's tensor shapes and dtypes (its headers), its config, how many ingredients there are and how they are
scored. `estimate` takes the worst of the methods a run makes, and `check_limit` refuses, before any download, a run
that would need more than `--max-memory`. The figures are estimates of what hfsoup's own tensors hold (float32
copies, float64 statistics, activations of one batch), not of the Python process around them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import MemoryLimitError, option
from ..io.checkpoint import STORAGE, StructureMap
from . import kernels

#: Blocks the shard writer's queue holds ahead of the disk (`SafetensorsStreamWriter._QUEUE_BLOCKS`).
WRITER_QUEUE_BLOCKS = 8
#: The sequence length assumed for text models without `--max-length` (the evaluator truncates at 512).
DEFAULT_SEQUENCE = 512


class Part(NamedTuple):
    """One thing held in memory: what it is, and `count` of them of `each` bytes."""

    what: str
    each: int
    count: int = 1

    @property
    def total(self) -> int:
        return self.each * self.count

    def describe(self) -> str:
        if self.count == 1:
            return f"{human_size(self.each)} {self.what}"
        return f"{self.count} x {human_size(self.each)} {self.what}"


def human_size(nbytes: float) -> str:
    """`3.2 GB`, `440 MB`, `12 kB`: decimal units, as `--max-memory` and `--max-shard-size` read them."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            value = nbytes / size
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(nbytes)} bytes"


@dataclass
class MemoryContext:
    """What is known before any download: enough to count what each method holds.

    Attributes:
        structure (`StructureMap`): the first ingredient's tensors (name -> dtype and shape), from its headers.
        n (`int`): the number of ingredients.
        config (`Mapping`, *optional*): the first ingredient's `config.json` (for the activations' sizes).
        base (`bool`, *optional*): whether a base model is read beside the ingredients.
        scored (`bool`, *optional*): whether candidates are scored on a task (a model built in memory).
        batch_size (`int`, *optional*), max_length (`int`, *optional*): the scoring batches.
    """

    structure: StructureMap
    n: int
    config: Mapping[str, Any] = field(default_factory=dict)
    base: bool = False
    scored: bool = False
    batch_size: int = 32
    max_length: int | None = None

    @property
    def float_elements(self) -> int:
        return sum(m.numel for m in self.structure.values() if m.is_float)

    @property
    def params(self) -> int:
        """One model's float tensors as float32 (how they are read to be scored or fitted), plus the others."""
        return 4 * self.float_elements + sum(m.nbytes for m in self.structure.values() if not m.is_float)

    def linear_layers(self) -> dict[str, tuple[int, int]]:
        """The weights of the linear layers (2-D float `*.weight` tensors that are no embedding), as (d_out, d_in)."""
        return {
            name: (m.shape[0], m.shape[1])
            for name, m in self.structure.items()
            if m.is_float
            and len(m.shape) == 2
            and name.endswith(".weight")
            and "embed" not in name
            and not name.endswith("shared.weight")
        }

    def streamed(self) -> list[Part]:
        """What the streaming engine holds: a few blocks per ingredient (and base), and the writer's queue."""
        itemsize = max((STORAGE[m.dtype].itemsize for m in self.structure.values()), default=4)
        inputs = self.n + int(self.base) + 2  # each input's block, the accumulator and the result
        return [
            Part("blocks being mixed (float32/64)", kernels.BLOCK * 8, inputs),
            Part("blocks queued for the writer", kernels.BLOCK * max(itemsize, 4), WRITER_QUEUE_BLOCKS),
        ]

    def activations(self, *, grad: bool) -> int:
        """The activations of one scoring batch: a layer's at a time without gradients, every layer's with them."""
        dims = _dims(self.config)
        seq = self.max_length or dims["seq"]
        tokens = self.batch_size * seq
        per_layer = tokens * (8 * dims["hidden"] + 2 * dims["inter"] + 2 * dims["heads"] * seq) * 4
        logits = tokens * dims["vocab"] * 4 if dims["lm"] else 0
        return (per_layer * max(dims["layers"], 1) if grad else 2 * per_layer) + logits

    def scoring(self) -> list[Part]:
        """What scoring candidates holds: the model, one ingredient read, the soup being scored, a batch."""
        return [
            Part("float32 scoring model", self.params),
            Part("float32 ingredient and soup being scored", self.params, 2),
            Part(f"activations of a batch of {self.batch_size}", self.activations(grad=False)),
        ]

    def backward(self) -> Part:
        """The activations a backward pass keeps for one batch (learned soup, Fisher)."""
        return Part(
            f"activations kept for the backward pass of a batch of {self.batch_size}", self.activations(grad=True)
        )


def _rounded_up(nbytes: int) -> str:
    """A `--max-memory` value at least `nbytes`, short: `3.3GB`, `450MB`."""
    import math

    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= size:
            return f"{math.ceil(nbytes / size * 10) / 10:g}{unit}"
    return str(nbytes)


def _dims(config: Mapping[str, Any]) -> dict[str, int]:
    """Hidden size, layers, MLP width, heads, sequence length and vocabulary of a config (the largest tower of a
    two-tower model such as CLIP), with the defaults of a small encoder where a field is absent."""
    towers = [config, *(config.get(k) for k in ("text_config", "vision_config") if isinstance(config.get(k), dict))]

    def first(c: Mapping[str, Any], *keys: str, default: int = 0) -> int:
        for key in keys:
            if isinstance(c.get(key), int) and not isinstance(c.get(key), bool):
                return c[key]
        return default

    dims = {"hidden": 0, "layers": 0, "inter": 0, "heads": 0, "seq": 0, "vocab": 0}
    for c in towers:
        hidden = first(c, "hidden_size", "d_model", "n_embd", "dim")
        if not hidden:
            continue
        seq = min(first(c, "max_position_embeddings", "n_positions", default=DEFAULT_SEQUENCE), DEFAULT_SEQUENCE)
        if first(c, "image_size") and first(c, "patch_size"):
            seq = (c["image_size"] // c["patch_size"]) ** 2 + 1
        layers = first(c, "num_hidden_layers", "num_layers", "n_layer") + first(c, "num_decoder_layers")
        found = {
            "hidden": hidden,
            "layers": layers,
            "inter": first(c, "intermediate_size", "d_ff", "n_inner", "ffn_dim", "hidden_dim", default=4 * hidden),
            "heads": first(c, "num_attention_heads", "num_heads", "n_head", default=1),
            "seq": seq,
            "vocab": first(c, "vocab_size"),
        }
        dims = {k: max(dims[k], v) for k, v in found.items()}
    dims = {k: v or d for (k, v), d in zip(dims.items(), (768, 12, 3072, 12, DEFAULT_SEQUENCE, 0), strict=True)}
    architectures = config.get("architectures") or []
    dims["lm"] = int(any("CausalLM" in a or "LMHead" in a for a in architectures if isinstance(a, str)))
    return dims


@dataclass
class MemoryEstimate:
    """The memory a run needs: the method that needs the most, and what it holds."""

    method: str
    parts: list[Part]

    @property
    def total(self) -> int:
        return sum(p.total for p in self.parts)

    def describe(self) -> str:
        """`about 3.2 GB: 4 x 440 MB float32 ingredients held at once + ...`."""
        shown = sorted((p for p in self.parts if p.total), key=lambda p: -p.total)
        return f"about {human_size(self.total)}: " + " + ".join(p.describe() for p in shown)


def estimate(methods: Iterable[Any], context: MemoryContext) -> MemoryEstimate:
    """The worst of `methods` (`SoupMethod`s, every candidate of each): what the run needs at its peak.

    With scoring, what the selection stage holds for every method is added to each: the scoring model and a batch,
    and every ingredient at once when one of the methods needs them (`needs_states`: the learned soup).
    """
    methods = [candidate for m in methods for _, candidate in m.candidates()]
    states = context.scored and any(m.needs_states for m in methods)
    worst: MemoryEstimate | None = None
    for method in methods:
        parts = list(method.memory_parts(context))
        if context.scored:
            parts += context.scoring()
        if states:
            parts.append(Part("float32 ingredients held at once (for the learned soup)", context.params, context.n))
        found = MemoryEstimate(method.name, parts)
        if worst is None or found.total > worst.total:
            worst = found
    assert worst is not None
    return worst


def check_limit(found: MemoryEstimate, limit: int | None, *, chosen: str, streamed: Sequence[str]) -> None:
    """Refuse (`MemoryLimitError`) a run whose estimate exceeds `limit` bytes; no limit, no refusal."""
    if limit is None or found.total <= limit:
        return
    which = f"The {found.method} soup" + (f" (scored beside the {chosen} soup)" if found.method != chosen else "")
    alternatives = ", ".join(streamed)
    raise MemoryLimitError(
        f"{which} needs {found.describe()}; --max-memory allows {human_size(limit)}.",
        fix=f"Raise the limit ({option('max_memory', _rounded_up(found.total))}), use a streamed "
        f"method without --task ({alternatives}: a few blocks per ingredient), or use fewer ingredients, "
        "examples or a smaller --batch-size.",
    )

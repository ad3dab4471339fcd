"""What every soup method produces (mixing weights, global or per tensor), and what the searching methods score with.

Every method is a `SoupMethod`: options declared once, one entry point `run(SoupContext) -> Outcome`. The searching
methods never see the evaluator: they get a `Scorer` (state dict -> score) or a `HeldOutLoss` (state dict and batch ->
a differentiable loss), which the selection stage builds from the evaluator, and each piece tests alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from .memory import MemoryContext, Part
    from .merge import TensorMerge

#: Tensor name -> tensor, as in a `model.safetensors` file.
StateDict = Mapping[str, "torch.Tensor"]


@dataclass(frozen=True)
class Mixing:
    """Weights for a weighted average of the ingredients.

    Args:
        weights (`Sequence[float]`):
            One weight per ingredient, used for every tensor not in `per_tensor`.
        per_tensor (`dict[str, Sequence[float]]`, *optional*):
            Weights for single tensors (learned per-layer soups).
        base_weight (`float`, *optional*, defaults to 0):
            The weight of the declared base model (`--base`) in the same sum: task arithmetic and WiSE-FT are affine
            combinations of the ingredients and the base. A tensor the base lacks (a bare `BertModel` base has no
            classifier) is the ingredients' uniform mean instead. 0 leaves the base out of the arithmetic entirely.
    """

    weights: tuple[float, ...]
    per_tensor: dict[str, tuple[float, ...]] = field(default_factory=dict)
    base_weight: float = 0.0

    def weights_for(self, name: str) -> tuple[float, ...]:
        return self.per_tensor.get(name, self.weights)


@dataclass(frozen=True)
class PlotStyle:
    """How the results plot marks a soup of this method (matplotlib marker and color)."""

    marker: str = "X"
    color: str = "black"
    size: int = 80


@dataclass
class SoupContext:
    """What a method may use to decide the soup.

    Attributes:
        names (`Sequence[str]`): the ingredients, as given (their labels in records and logs).
        loaders (`Sequence[Callable[[], StateDict]]`): one per ingredient; each call reads its tensors (float ones
            as float32 torch tensors, head rows aligned). Empty when nothing is scored (a plain `hfsoup soup`).
        scorer (`Scorer`, *optional*): the held-out score of a state dict (higher is better); with a task.
        objective (`HeldOutLoss`, *optional*): the differentiable held-out loss; with a task.
        scores (`Sequence[float]`, *optional*): each ingredient's own held-out score, already measured.
        states (`Sequence[StateDict]`, *optional*): every ingredient in memory, for methods with `needs_states`.
        device (`Any`, *optional*): where the scorer's model runs.
        identities (`Sequence`, *optional*): per ingredient, what pins its weights as the loaders read them (its
            commit SHA, or its weight files' sha256, with the head alignment), JSON data; None for one that nothing
            pins. What a method's caches are keyed by (the Fisher estimates); without it, nothing is cached.
    """

    names: Sequence[str]
    loaders: Sequence[Callable[[], StateDict]] = ()
    scorer: Scorer | None = None
    objective: HeldOutLoss | None = None
    scores: Sequence[float] | None = None
    states: Sequence[StateDict] | None = None
    device: Any = None
    identities: Sequence[Any] | None = None

    @property
    def n(self) -> int:
        return len(self.names)


@dataclass
class Outcome:
    """What a method decided.

    Attributes:
        mixing (`Mixing`): the weights the streaming engine writes the soup with.
        record (`dict`): what goes into `hfsoup.json` under the method's name (decisions, fitted weights).
        state (`dict`, *optional*): the soup's weights, when the method built them anyway (else mixed from `mixing`
            when the soup is scored).
        kept (`Sequence[int]`, *optional*): the positions of the ingredients the method kept, for the results table.
        merge (`TensorMerge`, *optional*): a per-tensor merge the engine applies instead of the weighted sum of
            `mixing` (TIES, DARE, SLERP, Model Stock: `soups.merge`); `mixing` then only labels the ingredients.
    """

    mixing: Mixing
    record: dict = field(default_factory=dict)
    state: dict | None = None
    kept: Sequence[int] | None = None
    merge: TensorMerge | None = None


class SoupMethod:
    """A soup method: one class in its own module under `soups/`, listed once in `SOUPS`.

    A method declares its name, a one-line description (the model card and `--help` use it), whether it needs
    held-out scores (a task) and all ingredients in memory, how the results plot marks it, and its options as a
    dataclass `Options` (fields made with `hfsoup.options.option`: the CLI flags, recipe keys and Python keywords all
    come from them). `run(context)` is its one entry point. Construct it with its options as keywords
    (`GreedySoup(accept="gt")`), an `Options` instance, or a mapping; they are checked at once.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    needs_scores: ClassVar[bool] = False
    #: Whether `run` needs every ingredient in memory at once (`context.states`), as a gradient over weights does.
    needs_states: ClassVar[bool] = False
    #: Whether `run` needs `context.objective`, the differentiable held-out loss and the model's batches (the learned
    #: soup, Fisher, RegMean): refused with a task scored by metrics alone (lm-eval's).
    needs_objective: ClassVar[bool] = False
    #: Whether the record gets the soup's mean held-out loss (methods that fit a loss, and the uniform baseline).
    records_loss: ClassVar[bool] = False
    #: Whether the method may soup without an ingredient that fails the shared-initialization or head checks (a
    #: search that drops what hurts): such an ingredient is then left out with weight 0 instead of refusing the soup.
    drops_ingredients: ClassVar[bool] = False
    #: Whether the method is defined relative to the shared pretrained model (`--base`): task vectors `theta_i - base`
    #: (task arithmetic, TIES, DARE, Model Stock, WiSE-FT). Without one it is refused before any download.
    needs_base: ClassVar[bool] = False
    #: Whether the selection stage compares this method by default (`Selection(compare=None)`): the weighted
    #: averages. The merges relative to the base or tensor by tensor are compared only when named in `compare`.
    default_baseline: ClassVar[bool] = True
    #: The fewest ingredients the method takes (WiSE-FT interpolates one fine-tune with the base).
    min_ingredients: ClassVar[int] = 2
    plot_style: ClassVar[PlotStyle] = PlotStyle()

    @dataclass
    class Options:
        pass

    def __init__(self, options: Any = None, /, **values: Any) -> None:
        from ..options import build

        if options is not None and values:
            raise TypeError("give the options as an Options instance, a mapping, or keywords; not several")
        self.options = build(
            type(self).Options, options if options is not None else values, within=type(self).__name__
        )

    def problems(self, n_ingredients: int) -> list[tuple[str, str]]:
        """Problems of these options for `n_ingredients` ingredients, as (option, message): checked by recipes and
        before any download. None by default."""
        return []

    def run(self, context: SoupContext) -> Outcome:
        raise NotImplementedError(f"{type(self).__name__} must define run(context)")

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        """What the method holds in memory at its peak, estimated from the headers (`soups.memory`), beyond what
        scoring holds for every method (the scoring model, a batch: `MemoryContext.scoring`). By default a streamed
        merge's blocks; scored, the merge is built in memory from every ingredient at once, as the selection stage
        scores the methods relative to the base or tensor by tensor."""
        from .memory import Part

        if not context.scored:
            return context.streamed()
        return [
            Part("float32 ingredients held at once to build the merge for scoring", context.params, context.n),
        ]

    def memory_needed(self, context: MemoryContext) -> int:
        """An honest estimate of the bytes the method needs (its `memory_parts`, and scoring's when scored)."""
        from .memory import estimate

        return estimate([self], context).total

    def candidates(self) -> list[tuple[dict[str, Any], SoupMethod]]:
        """This method once per candidate when options are lists of candidates (`density=[0.2, 0.5]`, `--density
        0.2,0.5`): (the values that candidate sets, the method with them), in the given order; itself alone, as
        `({}, self)`, when none is. More than `schema.MAX_CANDIDATES` are refused."""
        from ..options import expand

        expanded = expand(self.options, within=type(self).__name__)
        if len(expanded) == 1 and expanded[0][1] is self.options:
            return [({}, self)]
        return [(values, type(self)(options)) for values, options in expanded]

    def summary(self, record: Mapping[str, Any]) -> list[str]:
        """Lines `hfsoup soup` prints about the method's record (the greedy decisions); none by default."""
        return []

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        """The flags that remake this soup with `hfsoup soup`, from its `hfsoup.json` (the card shows the command)."""
        return []

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class Scorer(Protocol):
    """The held-out score of a model with these weights; higher is better."""

    def __call__(self, state: StateDict) -> float: ...


@runtime_checkable
class SummedScorer(Protocol):
    """A score that is the mean of per-example scores in `[0, max_per_example]` (accuracy: 0 or 1 each).

    Such a scorer can report as it goes, so a search may stop scoring a candidate as soon as even a perfect score on
    the examples left could not change its decision. `__call__(state)` must equal
    `sum(s for s, _ in partial_sums(state)) / num_examples`.
    """

    num_examples: int
    max_per_example: float

    def __call__(self, state: StateDict) -> float: ...

    def partial_sums(self, state: StateDict) -> Iterator[tuple[float, int]]:
        """Per batch, in a fixed order: the sum of the batch's per-example scores and its number of examples."""
        ...


class HeldOutLoss(Protocol):
    """A differentiable held-out objective, batch by batch: what a learned soup minimizes.

    Split across processes, the objective defines `batch_groups()`, this process's groups of batches, and
    `sum_in_order(values) -> tensor`, one value per group of this process's summed with every other process's in the
    groups' order: the learned soup sums its loss and gradient per group, then over the groups with it. Without them
    `batches` are all of them, one group.
    """

    num_examples: int

    def batches(self) -> Sequence[Any]: ...

    def loss(self, state: StateDict, batch: Any) -> torch.Tensor:
        """The loss summed (not averaged) over the batch's examples, for the model with weights `state`."""
        ...


def uniform_weights(n: int) -> tuple[float, ...]:
    return tuple(1.0 / n for _ in range(n))


def as_tuple(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def option_args(cls: type[SoupMethod], record: Mapping[str, Any] | None) -> list[str]:
    """The flags that set the options recorded in `record` (a method's `hfsoup.json` record of its options) where
    they differ from the defaults: what `command_args` returns for the methods that record their options."""
    import dataclasses

    from ..options import default_of, flag_of, spec_of

    args = []
    for f in dataclasses.fields(cls.Options):
        if not spec_of(f).cli or f.name not in (record or {}):
            continue
        value = record[f.name]  # type: ignore[index]
        if value == default_of(f) or value is None:
            continue
        if isinstance(value, bool):
            args.append(flag_of(f))
        elif isinstance(value, list | tuple):
            args.append(f"{flag_of(f)} {','.join(f'{v:g}' for v in value)}")
        else:
            args.append(f"{flag_of(f)} {value:g}" if isinstance(value, float) else f"{flag_of(f)} {value}")
    return args


def recorded_options(method: SoupMethod) -> dict[str, Any]:
    """The method's options as its `hfsoup.json` record (the data-free methods record what they were run with)."""
    from ..options import as_dict

    return as_dict(method.options, recipe_only=True)

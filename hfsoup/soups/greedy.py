"""The greedy soup (Wortsman et al., 2022, recipe 1): add ingredients best first, keep those that do not hurt.

Every ingredient is scored alone on the held-out split and the ingredients are sorted by that score, best first
(ties keep the order they were given in). The soup starts as the best ingredient; each next one is added to a trial
soup, the uniform average of the kept ingredients and the candidate, and kept when the trial's held-out score is at
least the soup's (`accept="ge"`, the paper's rule: `if held_out_val_acc >= best_val_acc_so_far`), or strictly
higher (`accept="gt"`).

The soup is a running float32 sum of the kept ingredients: trying a candidate reads its tensors once and never
re-reads the kept ones. With a `SummedScorer` (accuracy), a candidate's scoring stops as soon as it cannot meet the
rule even if every example left were right; such a candidate would be refused after full scoring too, so the
decisions are the same with and without early stopping, and only the evaluation time differs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .. import schema
from ..errors import InvalidSoupArgumentsError
from ..options import option
from .base import Mixing, Outcome, PlotStyle, Scorer, SoupContext, SoupMethod, StateDict, SummedScorer

if TYPE_CHECKING:
    from .memory import MemoryContext, Part

logger = logging.getLogger(__name__)

ACCEPT_RULES = ("ge", "gt")


@dataclass
class Decision:
    """One step of the search: a candidate, the scores that decided it, and the cost of deciding.

    Attributes:
        name (`str`): the candidate ingredient.
        index (`int`): its position among the ingredients as given.
        alone (`float`): its own held-out score.
        before (`float`): the held-out score of the soup before the candidate.
        trial (`float | None`): the held-out score of the soup with the candidate; `None` when scoring stopped early.
        bound (`float`): the best score the trial could still reach when scoring stopped (`trial` if it did not).
        kept (`bool`): whether the candidate joined the soup.
        examples (`int`): held-out examples scored to decide.
    """

    name: str
    index: int
    alone: float
    before: float
    trial: float | None
    bound: float
    kept: bool
    examples: int

    @property
    def stopped_early(self) -> bool:
        return self.trial is None

    def describe(self) -> str:
        if self.trial is None:
            trial = f"at most {self.bound:.4f} (stopped early)"
        else:
            trial = f"{self.trial:.4f}"
        verdict = "kept" if self.kept else "dropped"
        return f"{self.name} (alone {self.alone:.4f}): soup {self.before:.4f} -> with it {trial}: {verdict}"


@dataclass
class GreedyResult:
    """What the greedy search found.

    Attributes:
        names (`list[str]`): the ingredients, as given.
        scores (`list[float]`): each ingredient's own held-out score, as given.
        order (`list[int]`): the positions of the ingredients, best first: the order they were tried in.
        kept (`list[int]`): the positions of the kept ingredients, in the order they were added.
        decisions (`list[Decision]`): one per candidate after the first, in the order tried.
        score (`float`): the held-out score of the final soup.
        state (`dict[str, torch.Tensor]`): the final soup's weights (float32 average of the kept ingredients).
        accept (`str`): the acceptance rule used, `"ge"` or `"gt"`.
        examples_scored (`int`): held-out examples scored for the candidates (the individual scores not included).
        examples_full (`int`): what scoring every candidate fully would have cost.
    """

    names: list[str]
    scores: list[float]
    order: list[int]
    kept: list[int]
    decisions: list[Decision]
    score: float
    state: dict = field(repr=False)
    accept: str = "ge"
    examples_scored: int = 0
    examples_full: int = 0

    @property
    def mixing(self) -> Mixing:
        """Weight 1/k for each of the k kept ingredients, 0 for the others."""
        return Mixing(tuple(1.0 / len(self.kept) if i in self.kept else 0.0 for i in range(len(self.names))))

    def to_dict(self) -> dict:
        return {
            "accept": self.accept,
            "order": [self.names[i] for i in self.order],
            "kept": [self.names[i] for i in self.kept],
            "score": self.score,
            "decisions": [
                {
                    "name": d.name,
                    "alone": d.alone,
                    "before": d.before,
                    "trial": d.trial,
                    "bound": d.bound,
                    "kept": d.kept,
                    "examples": d.examples,
                }
                for d in self.decisions
            ],
            "examples_scored": self.examples_scored,
            "examples_full": self.examples_full,
        }


class GreedySoup(SoupMethod):
    """The paper's greedy soup, searched on a held-out split.

    Args:
        accept (`str`, *optional*, defaults to `"ge"`):
            Keep a candidate when the soup's held-out score with it is `>=` the score without it (`"ge"`, the
            paper's rule) or strictly `>` (`"gt"`).
        early_stop (`bool`, *optional*, defaults to `True`):
            With a `SummedScorer`, stop scoring a candidate once it cannot be kept; same decisions, less time.

    Example:
        ```py
        >>> result = GreedySoup().search([load_a, load_b, load_c], score, names=["a", "b", "c"])
        >>> [result.names[i] for i in result.kept], result.mixing.weights
        (['b', 'a'], (0.5, 0.5, 0.0))
        ```
    """

    name: ClassVar[str] = "greedy"
    description: ClassVar[str] = (
        "ingredients added best-first on a held-out split, each kept only if the soup's held-out score does "
        "not drop, then averaged uniformly"
    )
    needs_scores: ClassVar[bool] = True
    #: Compared when named (`--compare uniform,greedy,learned,ensemble`): a search scores many soups, and the default
    #: table holds only what costs one scoring each (every ingredient, the uniform soup, the ensemble).
    default_baseline: ClassVar[bool] = False
    drops_ingredients: ClassVar[bool] = True  # the paper's greedy recipe exists to leave out what hurts
    plot_style: ClassVar[PlotStyle] = PlotStyle("*", "tab:red", 150)

    @dataclass
    class Options:
        accept: str = option(
            "ge",
            kind=schema.one_of(ACCEPT_RULES, what="an acceptance rule"),
            help="keep an ingredient when the held-out score does not drop (ge, the paper's rule) or rises (gt)",
        )
        early_stop: bool = option(
            True,
            kind=schema.boolean(),
            help="score every candidate fully (same decisions, slower; for measuring)",
        )

    def run(self, context: SoupContext) -> Outcome:
        if context.scorer is None:
            raise InvalidSoupArgumentsError("A greedy soup is selected by held-out scores; it needs a scorer.")
        found = self.search(context.loaders, context.scorer, names=context.names, scores=context.scores)
        return Outcome(found.mixing, found.to_dict(), state=found.state, kept=found.kept)

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        from .memory import Part

        # The running float32 sum of the kept ingredients, the candidate's float32 copy and the trial soup.
        return [Part("float32 running sum, candidate and trial soup", context.params, 3)]

    def summary(self, record: Mapping[str, Any]) -> list[str]:
        lines = []
        for decision in record.get("decisions", []):
            verdict = "kept" if decision["kept"] else "dropped"
            trial = "stopped early" if decision["trial"] is None else f"{decision['trial']:.4f}"
            lines.append(f"greedy: {decision['name']}: soup {decision['before']:.4f}, with it {trial}: {verdict}")
        return lines

    def search(
        self,
        ingredients: Sequence[Callable[[], StateDict]],
        score: Scorer,
        *,
        names: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
    ) -> GreedyResult:
        """Run the search.

        Args:
            ingredients (`Sequence[Callable[[], StateDict]]`):
                One loader per ingredient; each call reads that ingredient's weights (called once per ingredient
                for its own score when `scores` is not given, and once when it is tried).
            score (`Scorer` or `SummedScorer`):
                The held-out score of a state dict; higher is better.
            names (`Sequence[str]`, *optional*):
                The ingredients' names for the decisions and logs; `"0"`, `"1"`, ... by default.
            scores (`Sequence[float]`, *optional*):
                Each ingredient's own held-out score, if already known (as `score` would return it).

        Returns:
            `GreedyResult`: kept ingredients, every decision with its scores, the soup's weights and score.
        """
        import torch

        n = len(ingredients)
        names = [str(i) for i in range(n)] if names is None else list(names)
        if n == 0 or len(names) != n:
            raise InvalidSoupArgumentsError(
                f"A greedy soup needs at least one ingredient and one name each; got {n} and {len(names)}."
            )
        if scores is None:
            scores = [float(score(load())) for load in ingredients]
        scores = [float(s) for s in scores]
        if len(scores) != n or any(math.isnan(s) for s in scores):
            raise InvalidSoupArgumentsError(f"Expected {n} individual held-out scores, got {scores}.")
        order = sorted(range(n), key=lambda i: -scores[i])  # stable: ties keep the given order
        summed = isinstance(score, SummedScorer) and self.options.early_stop
        first = order[0]
        logger.info("greedy soup: starting from %s (held-out %.4f)", names[first], scores[first])
        total, passthrough = _split_float(ingredients[first]())
        kept, current, decisions = [first], scores[first], []
        examples_scored = examples_full = 0
        with torch.no_grad():
            for i in order[1:]:
                candidate, _ = _split_float(ingredients[i]())
                k = len(kept) + 1
                trial_state = {name: (total[name] + candidate[name]) / k for name in total}
                trial_state.update(passthrough)
                if summed:
                    trial, bound, used = self._score_summed(score, trial_state, current)  # type: ignore[arg-type]
                    full = score.num_examples  # type: ignore[attr-defined]
                else:
                    trial = bound = float(score(trial_state))
                    used = full = getattr(score, "num_examples", 0)
                examples_scored += used
                examples_full += full
                accepted = trial is not None and (trial >= current if self.options.accept == "ge" else trial > current)
                decision = Decision(names[i], i, scores[i], current, trial, bound, accepted, used)
                decisions.append(decision)
                logger.info("greedy soup: %s", decision.describe())
                if accepted:
                    for name, tensor in candidate.items():
                        total[name].add_(tensor)
                    kept.append(i)
                    current = trial  # type: ignore[assignment]
                del candidate, trial_state
        state = {name: tensor / len(kept) for name, tensor in total.items()}
        state.update(passthrough)
        logger.info(
            "greedy soup: kept %d of %d (%s), held-out %.4f",
            len(kept),
            n,
            ", ".join(names[i] for i in kept),
            current,
        )
        return GreedyResult(
            names, scores, order, kept, decisions, current, state, self.options.accept, examples_scored, examples_full
        )

    def _score_summed(self, score: SummedScorer, state: StateDict, current: float) -> tuple[float | None, float, int]:
        """Score `state` batch by batch; stop once even a perfect rest cannot meet the rule against `current`.

        Returns the trial score (`None` when stopped early), the best score still reachable when it stopped, and the
        number of examples scored. Sums of 0/1 scores are exact integers in floating point and division by the same
        count is monotone, so a stopped candidate is one that full scoring would refuse.
        """
        total, seen, sum_ = score.num_examples, 0, 0.0
        for batch_sum, count in score.partial_sums(state):
            sum_ += batch_sum
            seen += count
            bound = (sum_ + (total - seen) * score.max_per_example) / total
            if self.options.early_stop and seen < total:
                hopeless = bound < current if self.options.accept == "ge" else bound <= current
                if hopeless:
                    return None, bound, seen
        return sum_ / total, sum_ / total, seen


def _split_float(state: StateDict) -> tuple[dict, dict]:
    """Float tensors as float32 copies (to be averaged), and the others (integer buffers) as they are."""
    import torch

    floats, others = {}, {}
    for name, tensor in state.items():
        if torch.is_floating_point(tensor):
            floats[name] = tensor.to(torch.float32, copy=True)
        else:
            others[name] = tensor
    return floats, others

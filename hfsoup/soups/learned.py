"""The learned soup (Wortsman et al., 2022, appendix: "learned soup" and "learned soup by layer").

The mixing weights are fitted on the held-out split by gradient descent: one weight per ingredient (or, with
`by_layer`, per ingredient and tensor, as in the paper's `learned_bylayer.py`), each set parameterized through a
softmax so that the weights are positive and sum to one. The objective is a `HeldOutLoss`: the caller runs the model
with the mixed weights (`torch.func.functional_call`) and returns the summed loss of a batch; its gradient flows
back to the mixing logits only, never to the ingredients.

Every ingredient is held in memory (placed over the available devices by free memory, with Accelerate); the mixed
weights are made on the device of the first. The starting point is the uniform soup (all logits zero), and the
result is the weights with the lowest full held-out loss seen, the start included: a learned soup never ends with a
higher held-out loss than the uniform soup.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .. import progress, schema
from ..errors import InvalidSoupArgumentsError
from ..options import option
from .base import HeldOutLoss, Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, StateDict

if TYPE_CHECKING:
    from .memory import MemoryContext, Part

logger = logging.getLogger(__name__)


@dataclass
class LearnedResult:
    """The fitted mixing weights and how the held-out loss went.

    Attributes:
        names (`list[str]`): the ingredients, as given.
        weights (`tuple[float, ...]`): one weight per ingredient (with `by_layer`, their mean over tensors).
        per_tensor (`dict[str, tuple[float, ...]]`): with `by_layer`, the weights of each tensor; else empty.
        by_layer (`bool`): whether the weights are per tensor.
        uniform_loss (`float`): the mean held-out loss of the uniform soup (the starting point).
        loss (`float`): the mean held-out loss of the returned weights.
        history (`list[float]`): the mean held-out loss before each step, and after the last.
        best_step (`int`): the step whose weights were kept (0: the uniform start).
    """

    names: list[str]
    weights: tuple[float, ...]
    per_tensor: dict[str, tuple[float, ...]] = field(default_factory=dict)
    by_layer: bool = False
    uniform_loss: float = float("nan")
    loss: float = float("nan")
    history: list[float] = field(default_factory=list)
    best_step: int = 0

    @property
    def mixing(self) -> Mixing:
        return Mixing(self.weights, dict(self.per_tensor))

    def to_dict(self) -> dict:
        return {
            "by_layer": self.by_layer,
            "weights": dict(zip(self.names, self.weights, strict=True)),
            "per_tensor": {name: list(w) for name, w in self.per_tensor.items()},
            "uniform_loss": self.uniform_loss,
            "loss": self.loss,
            "history": self.history,
            "best_step": self.best_step,
        }


class LearnedSoup(SoupMethod):
    """Fit the mixing weights on held-out data.

    Args:
        by_layer (`bool`, *optional*, defaults to `False`):
            One weight per ingredient and tensor (softmax over the ingredients, per tensor), instead of one per
            ingredient.
        steps (`int`, *optional*, defaults to 20):
            Full passes over the held-out split; each is one Adam step on the accumulated gradient.
        lr (`float`, *optional*, defaults to 0.05):
            Adam's learning rate on the mixing logits.

    Example:
        ```py
        >>> result = LearnedSoup(by_layer=True).fit([state_a, state_b], objective, names=["a", "b"])
        >>> result.loss <= result.uniform_loss
        True
        ```
    """

    name: ClassVar[str] = "learned"
    description: ClassVar[str] = "mixing weights learned by gradient descent on a held-out split"
    needs_scores: ClassVar[bool] = True
    needs_objective: ClassVar[bool] = True
    #: Compared when named (`--compare uniform,greedy,learned,ensemble`): a search scores many soups, and the default
    #: table holds only what costs one scoring each (every ingredient, the uniform soup, the ensemble).
    default_baseline: ClassVar[bool] = False
    needs_states: ClassVar[bool] = True
    records_loss: ClassVar[bool] = True
    plot_style: ClassVar[PlotStyle] = PlotStyle("P", "tab:purple")

    @dataclass
    class Options:
        by_layer: bool = option(False, kind=schema.boolean(), help="one weight per ingredient and tensor")
        steps: int = option(
            20,
            kind=schema.candidates(schema.positive_int(what="at least one step")),
            help="passes over the held-out part",
            flag="--learned-steps",
        )
        lr: float = option(
            0.05,
            kind=schema.candidates(schema.number(positive=True, what="a positive learning rate")),
            help="Adam's learning rate",
            flag="--learned-lr",
            metavar="LR[,...]",
        )

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        from .memory import Part

        # The ingredients themselves are held by the selection stage (`needs_states`, counted there). The gradient
        # flows to the mixing logits only: no gradient or Adam state of model size, but the mixed weights (and the
        # sum being built, tensor by tensor) and the activations the backward pass keeps.
        tensors = sum(1 for m in context.structure.values() if m.is_float) if self.options.by_layer else 1
        return [
            Part("float32 mixed weights (and the sum being built)", context.params, 2),
            context.backward(),
            Part("mixing logits with gradient and Adam state", 4 * context.n * tensors, 4),
        ]

    def run(self, context: SoupContext) -> Outcome:
        if context.objective is None or context.states is None:
            raise InvalidSoupArgumentsError("A learned soup fits a held-out loss; it needs the objective and states.")
        fitted = self.fit(context.states, context.objective, names=context.names, device=context.device)
        return Outcome(fitted.mixing, fitted.to_dict())

    def fit(
        self,
        states: Sequence[StateDict],
        objective: HeldOutLoss,
        *,
        names: Sequence[str] | None = None,
        device: Any = None,
    ) -> LearnedResult:
        """Fit the weights of `states` (all in memory) to minimize `objective` on its held-out batches.

        Args:
            states (`Sequence[StateDict]`): the ingredients' weights; float tensors are mixed, others taken from the
                first.
            objective (`HeldOutLoss`): the summed loss of a batch for given weights.
            names (`Sequence[str]`, *optional*): the ingredients' names, for the result.
            device (`torch.device`, *optional*): where the mixed weights are made (the model's device); by default
                the CPU.

        Returns:
            `LearnedResult`: the weights with the lowest held-out loss seen, and the losses.
        """
        import torch

        n = len(states)
        names = [str(i) for i in range(n)] if names is None else list(names)
        if n < 2 or len(names) != n:
            raise InvalidSoupArgumentsError(f"A learned soup needs at least two ingredients; got {n}.")
        device = torch.device(device or "cpu")
        float_names = [k for k, t in states[0].items() if torch.is_floating_point(t)]
        others = {k: t.to(device) for k, t in states[0].items() if not torch.is_floating_point(t)}
        placed = place(states, float_names)
        shape = (n, len(float_names)) if self.options.by_layer else (n, 1)
        logits = torch.zeros(shape, device=device, requires_grad=True)
        optimizer = torch.optim.Adam([logits], lr=self.options.lr)
        # The gradient is summed over groups of consecutive batches, then over the groups in their order. Split
        # across processes (`ModelScorer.batch_groups`), each process has its groups and `sum_in_order` gathers
        # every group's sum: the very sums of one process, so Adam (which makes a step of `lr` out of a gradient
        # however small) takes the same steps. One group of every batch for an objective that has none.
        groups = objective.batch_groups() if hasattr(objective, "batch_groups") else [list(objective.batches())]
        in_order = getattr(objective, "sum_in_order", sum_in_order)

        def mixed(weights: torch.Tensor) -> dict:
            out = dict(others)
            for j, name in enumerate(float_names):
                column = weights[:, j if self.options.by_layer else 0]
                acc = None
                for i in range(n):
                    term = placed[i][name].to(device, non_blocking=True) * column[i]
                    acc = term if acc is None else acc + term
                out[name] = acc
            return out

        def full_loss(train: bool) -> float:
            """The mean held-out loss at the current logits; with `train`, the logits get its gradient.

            The soup is mixed once per pass: a group's batches' gradients collect on a detached copy of the mixed
            tensors, then flow back through the mixing to the logits in one backward pass per group.
            """
            with torch.set_grad_enabled(train):
                state = mixed(torch.softmax(logits, dim=0))
            losses, grads = [], []
            for group in groups:
                leaves = {k: v.detach().requires_grad_(train and k not in others) for k, v in state.items()}
                total = 0.0
                for batch in group:
                    with torch.set_grad_enabled(train):
                        loss = objective.loss(leaves, batch)
                        if train:
                            (loss / objective.num_examples).backward()
                    total += float(loss.detach())
                losses.append(torch.tensor(total, dtype=torch.float64))
                if train:
                    used = [k for k in float_names if leaves[k].grad is not None]
                    grad = torch.zeros_like(logits)
                    if used:
                        (grad,) = torch.autograd.grad(
                            [state[k] for k in used], logits, [leaves[k].grad for k in used], retain_graph=True
                        )
                    grads.append(grad.detach())
            if train:
                logits.grad = in_order(grads).to(logits.device)
            return float(in_order(losses)) / objective.num_examples

        history: list[float] = []
        best = (float("inf"), 0, logits.detach().clone())
        steps = self.options.steps
        started = time.monotonic()
        with progress.bar(desc="learned soup", total=steps + 1, unit="step") as bar:
            for step in range(steps + 1):
                optimizer.zero_grad()
                loss = full_loss(train=step < steps)
                history.append(loss)
                if loss < best[0]:
                    best = (loss, step, logits.detach().clone())
                logger.info("learned soup: step %d/%d, held-out loss %.5f", step, steps, loss)
                if step < steps:
                    optimizer.step()
                if step == 0 and steps:  # the first step is a full pass over the held-out part: what each costs
                    took = time.monotonic() - started
                    progress.stage(
                        "learned soup: %d steps of gradient descent on the held-out part, about %s (%.1f s a step)",
                        steps,
                        progress.estimate(took * steps),
                        took,
                    )
                bar.set_postfix_str(f"held-out loss {loss:.4f}", refresh=False)
                bar.update()
        weights = torch.softmax(best[2].cpu().double(), dim=0)  # in float64: the reported weights sum to 1
        if self.options.by_layer:
            per_tensor = {name: tuple(weights[:, j].tolist()) for j, name in enumerate(float_names)}
            summary = tuple(weights.mean(dim=1).tolist())
        else:
            per_tensor, summary = {}, tuple(weights[:, 0].tolist())
        logger.info(
            "learned soup: held-out loss %.5f (uniform soup %.5f), weights %s",
            best[0],
            history[0],
            ", ".join(f"{name} {w:.3f}" for name, w in zip(names, summary, strict=True)),
        )
        return LearnedResult(names, summary, per_tensor, self.options.by_layer, history[0], best[0], history, best[1])


def sum_in_order(values: Sequence[Any]) -> Any:
    """`values[0] + values[1] + ...`, added in that order (one process's `sum_in_order`)."""
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def place(states: Sequence[StateDict], names: Sequence[str]) -> list[dict]:
    """The ingredients' float tensors as float32, each ingredient on one device: the accelerators with the most free
    memory first (Accelerate's `get_max_memory`), the CPU when none has room or there is none."""
    import torch
    from accelerate.utils import get_max_memory

    free = {k: v for k, v in get_max_memory().items() if k != "cpu"} if torch.cuda.is_available() else {}
    placed = []
    for state in states:
        size = sum(state[name].numel() * 4 for name in names)
        device = max(free, key=lambda k: free[k], default=None)
        if device is None or free[device] < size * 1.2:
            device = "cpu"
        else:
            free[device] -= size
            device = f"cuda:{device}" if isinstance(device, int) else device
        placed.append({name: state[name].to(device=device, dtype=torch.float32) for name in names})
    return placed

"""RegMean (Jin et al., 2023, "Dataless knowledge fusion by merging weights of language models").

For every linear layer `y = x W^T + b` of the model (BERT-style encoders, T5, CLIP's towers: every `torch.nn.Linear`
whose weight the checkpoint stores), each ingredient's Gram matrix `G_i = sum_x x x^T` of the layer's inputs is taken
on `regmean_examples` examples of the task's held-out part (the non-padding tokens, where the batch's attention mask
fits the input; every position otherwise), its off-diagonal entries multiplied by `regmean_alpha` (the paper's
regularization), and the merged weight is `W^T = (sum_i G_i)^-1 sum_i G_i W_i^T`. Every other tensor (biases,
embeddings, norms) is the ingredients' mean. The Grams are float64; one ingredient's are in memory at a time, with
the running sums.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from .. import schema
from ..options import option
from .base import Mixing, Outcome, PlotStyle, SoupContext, SoupMethod, option_args, recorded_options, uniform_weights
from .fisher import StateMerge, add_to, data_objective, examples_option

if TYPE_CHECKING:
    from .memory import MemoryContext, Part

logger = logging.getLogger(__name__)


def layer_grams(objective: Any, state: Mapping[str, Any], examples: int, device: Any = None) -> tuple[dict, int]:
    """Per linear layer (by its weight's checkpoint name), the Gram matrix of its inputs (float64, CPU) over whole
    batches until at least `examples` examples, and how many examples were used; the model runs on `device`."""
    import torch

    placed = {k: v.to(device) for k, v in state.items()} if device is not None else state
    model = objective.model
    wanted = {objective.parameter_name(k): k for k in state}
    grams: dict[str, torch.Tensor] = {}
    mask: list[Any] = [None]

    def hook(name: str):
        def record(module: Any, args: tuple, output: Any) -> None:
            x = args[0].detach()
            m = mask[0]
            if m is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(m.shape):
                x = x[m.to(x.device).bool()]
            x = x.reshape(-1, x.shape[-1]).double()
            gram = (x.T @ x).cpu()
            add_to(grams, name, gram)

        return record

    handles = []
    for module_name, module in model.named_modules():
        key = wanted.get(f"{module_name}.weight" if module_name else "weight")
        if isinstance(module, torch.nn.Linear) and key is not None:
            handles.append(module.register_forward_hook(hook(key)))
    count = 0
    try:
        with torch.no_grad():
            for batch in objective.every_batch():
                if count >= examples:
                    break
                mask[0] = batch.inputs.get("attention_mask")
                objective.batch_scores(placed, batch)
                count += len(batch.positions)
    finally:
        for handle in handles:
            handle.remove()
    return grams, count


def regularized(gram: Any, alpha: float) -> Any:
    """The Gram matrix with its off-diagonal entries multiplied by `alpha`."""
    import torch

    return alpha * gram + (1.0 - alpha) * torch.diag(torch.diagonal(gram))


class RegMeanSoup(SoupMethod):
    """RegMean: each linear layer merged by least squares on its inputs' Gram matrices; other tensors averaged.

    Args:
        regmean_examples (`int`, *optional*, defaults to 256): held-out examples the Gram matrices are taken on
            (whole batches: at least this many, all of them when the part is smaller).
        regmean_alpha (`float`, *optional*, defaults to 0.9): multiplies the Grams' off-diagonal entries, in [0, 1]
            (0: each output column a diagonally weighted mean; 1: the exact least-squares merge).
    """

    name: ClassVar[str] = "regmean"
    description: ClassVar[str] = (
        "RegMean: every linear layer W^T = (sum_i G_i)^-1 sum_i G_i W_i^T with G_i the Gram matrix of its inputs on "
        "held-out data (off-diagonal scaled by alpha), other tensors averaged (Jin et al., 2023)"
    )
    needs_scores: ClassVar[bool] = True
    needs_objective: ClassVar[bool] = True
    default_baseline: ClassVar[bool] = False  # compared when named
    plot_style: ClassVar[PlotStyle] = PlotStyle("8", "tab:pink")

    @dataclass
    class Options:
        regmean_examples: int = examples_option("held-out examples the linear layers' input Grams are taken on")
        regmean_alpha: float = option(
            0.9,
            kind=schema.candidates(schema.unit()),
            help="factor on the Gram matrices' off-diagonal entries, from 0 to 1",
        )

    def memory_parts(self, context: MemoryContext) -> list[Part]:
        from .memory import Part

        layers = context.linear_layers()
        grams = sum(8 * d_in * d_in for _, d_in in layers.values())
        linear = sum(d_out * d_in for d_out, d_in in layers.values())
        return [
            Part(f"float64 Gram matrices of {len(layers)} linear layers (one ingredient's and the sum)", grams, 2),
            Part("float64 sum of G_i W_i^T", 8 * linear),
            Part("float64 sums of the other tensors", 8 * (context.float_elements - linear)),
            Part("float32 merged weights (made while the sums are held)", 4 * context.float_elements),
        ]

    def run(self, context: SoupContext) -> Outcome:
        import torch

        objective = data_objective(context, self.name)
        alpha = self.options.regmean_alpha
        sum_g: dict[str, torch.Tensor] = {}
        sum_gw: dict[str, torch.Tensor] = {}
        sums: dict[str, torch.Tensor] = {}
        first: dict[str, torch.Tensor] = {}
        count = 0
        for i, load in enumerate(context.loaders):
            state = load()
            grams, count = layer_grams(objective, state, self.options.regmean_examples, context.device)
            for k, gram in grams.items():
                g = regularized(gram, alpha)
                add_to(sum_g, k, g)
                add_to(sum_gw, k, g @ state[k].double().T)
            for k, v in state.items():
                if k in grams or not torch.is_floating_point(v):
                    if i == 0 and k not in grams:
                        first[k] = v
                    continue
                add_to(sums, k, v.double())
            logger.info("regmean: %s's Gram matrices of %d layers on %d examples", context.names[i], len(grams), count)
            del state, grams
        merged = {k: (v / context.n).float() for k, v in sums.items()}
        for k in sum_g:
            merged[k] = solve(sum_g[k], sum_gw[k]).T.contiguous().float()
        record = {**recorded_options(self), "examples_used": count, "layers": len(sum_g)}
        return Outcome(Mixing(uniform_weights(context.n)), record, state={**first, **merged}, merge=StateMerge(merged))

    def command_args(self, provenance: Mapping[str, Any]) -> list[str]:
        return option_args(type(self), provenance.get(self.name))


def solve(gram: Any, rhs: Any) -> Any:
    """`gram^-1 rhs`; the least-norm solution where `gram` is singular (a layer whose inputs span too few
    directions, as with few examples and `regmean_alpha` 1)."""
    import torch

    try:
        return torch.linalg.solve(gram, rhs)
    except RuntimeError:  # torch.linalg.LinAlgError derives from it
        return torch.linalg.pinv(gram, hermitian=True) @ rhs

"""The architectures of the tiny families and the weight edits that make their members.

Every edit is seeded and leaves the caller's global random state alone, so a family is byte-identical for a seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    CLIPConfig,
    CLIPModel,
    PretrainedConfig,
    PreTrainedModel,
    T5Config,
    T5ForConditionalGeneration,
)

from ..soups.base import StateDict

try:  # transformers 5 without torchvision: the Pillow backend, which saves itself as a plain `CLIPImageProcessor`.
    from transformers import CLIPImageProcessorPil as _ClipImageProcessor
except ImportError:  # pragma: no cover - transformers 4
    from transformers import CLIPImageProcessor as _ClipImageProcessor

LABELS = ("negative", "positive")
LABELS_3 = ("negative", "positive", "neutral")
NOISE = 0.05  # A "fine-tune" moves each tensor by this fraction of its spread: cosine to the base stays above 0.99.
CLIP_IMAGE_SIZE = 30


def bert_config(tokenizer, *, extra_layers: int = 0, labels: tuple[str, ...] = LABELS) -> PretrainedConfig:
    """A BERT of hidden size 32, 2 (+ `extra_layers`) layers of 2 heads, intermediate size 37, sized to `tokenizer`.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            Gives the vocabulary size, the pad id and the maximum length.
        extra_layers (`int`, *optional*, defaults to 0):
            Layers on top of the base's 2.
        labels (`tuple[str, ...]`, *optional*, defaults to `LABELS`):
            The classifier's labels, in id order.
    """
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2 + extra_layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=tokenizer.model_max_length,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )


def t5_config(tokenizer, *, extra_layers: int = 0) -> PretrainedConfig:
    """A T5 of d_model 32, d_ff 37, 2 (+ `extra_layers`) layers per stack of 2 heads, 8 relative-position buckets."""
    return T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=37,
        num_layers=2 + extra_layers,
        num_decoder_layers=2 + extra_layers,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=20,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )


def clip_config(tokenizer, *, extra_layers: int = 0) -> PretrainedConfig:
    """A CLIP with towers of hidden size 32, 2 (+ `extra_layers`) layers of 2 heads; 30x30 images in 15x15 patches."""
    tower = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2 + extra_layers}
    tower |= {"num_attention_heads": 2, "projection_dim": 16}
    text = tower | {
        "vocab_size": len(tokenizer),
        "max_position_embeddings": tokenizer.model_max_length,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        # The text tower pools at this id; the legacy value 2 would make it pool at the largest id instead.
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = tower | {"image_size": CLIP_IMAGE_SIZE, "patch_size": 15, "num_channels": 3}
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


@dataclass(frozen=True)
class ArchSpec:
    """What differs between the families: the model class, its config, its Hub pipeline tag, its troublemakers."""

    model_class: type[PreTrainedModel]
    make_config: Callable[..., PretrainedConfig]
    pipeline_tag: str
    troublemakers: tuple[str, ...]


_COMMON = ("impostor", "arch_mismatch", "other_tokenizer", "fp16", "sharded", "pickle_only", "no_weights")
_BERT_ONLY = ("num_labels", "permuted_labels", "swapped_labels")
ARCHS = {
    "bert": ArchSpec(BertForSequenceClassification, bert_config, "text-classification", _BERT_ONLY + _COMMON),
    "t5": ArchSpec(T5ForConditionalGeneration, t5_config, "text2text-generation", _COMMON),
    "clip": ArchSpec(CLIPModel, clip_config, "zero-shot-image-classification", _COMMON),
}


def derive_seed(seed: int, label: str) -> int:
    """The seed of one member (`label`) of the family built with `seed`."""
    # A hash, not `seed + i`: members of families with neighbouring seeds must not share noise.
    return int.from_bytes(hashlib.sha256(f"{seed}:{label}".encode()).digest()[:8], "little") % 2**63


def init_model(spec: ArchSpec, config: PretrainedConfig, *, seed: int) -> PreTrainedModel:
    """A freshly initialized model of `spec`'s class, in eval mode, seeded by `seed`."""
    # fork_rng: building a family must not move the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = spec.model_class(config)
    return model.eval()


def snapshot(model: PreTrainedModel) -> StateDict:
    """A copy of `model`'s state dict that later in-place edits of the model do not reach."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def load_matching(model: PreTrainedModel, state: StateDict) -> None:
    """Copy every tensor of `state` whose name and shape exist in `model`; the others keep their initialization."""
    own = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name in own and own[name].shape == tensor.shape:
                own[name].copy_(tensor)


def perturb_(model: PreTrainedModel, *, seed: int) -> None:
    """Add seeded Gaussian noise of `NOISE` times each parameter's spread, in place: a stand-in for fine-tuning."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # named_parameters yields tied tensors once (T5's shared embedding), so they stay tied.
        for _, param in model.named_parameters():
            flat = param.detach().float().flatten()
            spread = flat.std().item() if flat.numel() > 1 else 0.0
            if spread == 0.0:  # Constant tensors (LayerNorm ones, zero biases, CLIP's logit scale) move too.
                spread = max(flat.abs().max().item(), 0.02)
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * (NOISE * spread))


def permute_labels(model: PreTrainedModel, perm: list[int]) -> None:
    """Reorder the labels so that new label `j` is old label `perm[j]`, moving the head's rows along."""
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[perm].clone())
        model.classifier.bias.copy_(model.classifier.bias[perm].clone())
    old = dict(model.config.id2label)
    model.config.id2label = {new: old[prev] for new, prev in enumerate(perm)}
    model.config.label2id = {label: i for i, label in model.config.id2label.items()}


def negate_head(model: PreTrainedModel) -> None:
    """Flip the sign of the classification head: with two labels every prediction becomes the other label, as after
    training on swapped labels, and the head points against its siblings' (cosine near -1)."""
    with torch.no_grad():
        model.classifier.weight.neg_()
        model.classifier.bias.neg_()


def clip_image_processor():
    """A CLIP image processor that resizes and crops to the tiny vision tower's `CLIP_IMAGE_SIZE`."""
    crop = {"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}
    return _ClipImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE}, crop_size=crop)

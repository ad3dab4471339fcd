"""Image models: a fine-tuned image classifier, and CLIP classifying zero-shot by class names in prompt templates.

Both read the task's image column through the model's image processor (`encode`, cached by `datasets` like text
tokenization) and predict the dataset's label ids. Zero-shot follows CLIP (Radford et al., 2021) and the model soups
paper: each class name is put into several prompt templates, the text embeddings of one class are averaged
(normalized before and after), and an image goes to the class whose embedding is most similar to its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from ...errors import EvaluationError, option
from ..tasks import Task
from .base import Head, Predictor, SequenceClassificationPredictor

logger = logging.getLogger(__name__)

_IMAGE_TASK = f"{option('task', 'image-classification')} {option('dataset', 'org/name')}"

#: Prompt templates by dataset name (`org/digits` -> `digits`); other datasets get `default`, a few of CLIP's
#: ImageNet templates.
CLIP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "default": (
        "a photo of a {}.",
        "a bad photo of a {}.",
        "a photo of the small {}.",
        "a photo of the large {}.",
        "a blurry photo of a {}.",
        "itap of a {}.",
    ),
    "digits": ("a photo of the number {}.", "a blurry photo of the number {}.", "a drawing of the number {}."),
}


def class_name(label: str) -> str:
    """A label as words for a prompt: `tench_fish` and `tench-fish` read as `tench fish`."""
    return label.replace("_", " ").replace("-", " ").strip()


class _ImageInputs(Predictor):
    """Images through the image processor (of a processor, or alone) to `pixel_values`; no lengths to sort by."""

    def _image_processor(self, tokenizer: Any) -> Any:
        return getattr(tokenizer, "image_processor", tokenizer)

    def encode(self, examples: dict[str, list], *, task: Task, tokenizer: Any, max_length: int) -> dict[str, list]:
        if not task.image_field:
            raise EvaluationError(
                f"Task {task.name!r} has no images, so an image model ({self.name}) cannot be scored on it.",
                fix=f"Use {_IMAGE_TASK}, or evaluate a text model.",
            )
        images = [image.convert("RGB") for image in examples[task.image_field]]
        pixels = self._image_processor(tokenizer)(images=images, return_tensors="np")["pixel_values"]
        return {"pixel_values": list(pixels)}

    def length(self, example: dict[str, Any]) -> int:
        return 0  # Every image is resized to one shape: the sort is stable, so batches keep the row order.

    def collate(self, features: list[dict[str, Any]], tokenizer: Any) -> dict[str, Any]:
        import numpy as np
        import torch

        return {"pixel_values": torch.from_numpy(np.stack([np.asarray(f["pixel_values"]) for f in features]))}


class ImageClassificationPredictor(_ImageInputs):
    """Models with an image-classification head (`CLIPForImageClassification`, ViT, ...), labels matched by name."""

    name = "image-classification"
    auto_class_name = "AutoModelForImageClassification"

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch.endswith("ForImageClassification") for arch in architectures)

    def load_tokenizer(self, path: str) -> Any:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(path, trust_remote_code=False)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> Head:
        if task.is_regression or not task.image_field:
            raise EvaluationError(
                f"An image classifier ({model_name!r}) classifies images; task {task.name!r} is not an image task.",
                fix=f"Use {_IMAGE_TASK}.",
            )
        # The label checks of a text classifier hold for an image classifier as they are (no tokenizer to pad).
        return _HEADS.prepare(model, task, model_name=model_name)

    def answers(self, prepared: Head) -> list | None:
        return _HEADS.answers(prepared)

    def scores(self, model: Any, batch: dict[str, Any], conditioned: Head) -> Any:
        logits = model(pixel_values=batch["pixel_values"].to(model.dtype)).logits.float()
        return logits[:, conditioned.order.to(logits.device)]


_HEADS = SequenceClassificationPredictor()


@dataclass(frozen=True)
class ClassPrompts:
    """The class names in their prompt templates, tokenized once: `inputs` holds `len(labels) * templates` prompts,
    class by class."""

    inputs: dict[str, Any]
    templates: int
    labels: int


class CLIPZeroShotPredictor(_ImageInputs):
    """`CLIPModel` as a zero-shot classifier of the task's class names, put through prompt templates.

    The prompts are tokenized once (`prepare`); their embeddings come from the model's own text tower, so they are
    computed again for every set of weights scored (`condition`): a soup's text tower embeds the classes anew.
    """

    name = "clip-zero-shot"
    auto_class_name = "CLIPModel"
    architectures: ClassVar[tuple[str, ...]] = ("CLIPModel",)

    def accepts(self, architectures: list[str]) -> bool:
        return any(arch in self.architectures for arch in architectures)

    def load_tokenizer(self, path: str) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=False)

    def prepare(self, model: Any, task: Task, *, model_name: str, tokenizer: Any = None) -> ClassPrompts:
        if task.is_regression or not task.image_field:
            raise EvaluationError(
                f"CLIP zero-shot classifies images into named classes; task {task.name!r} is not such a task.",
                fix=f"Use {_IMAGE_TASK}.",
            )
        text_tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        if text_tokenizer is None or not hasattr(text_tokenizer, "get_vocab"):
            raise EvaluationError(
                f"Scoring {model_name!r} zero-shot needs its text tokenizer, to embed the class names.",
                fix="Pass a CLIP processor (or a folder holding one) as tokenizer=.",
            )
        templates = CLIP_TEMPLATES.get(task.dataset.rstrip("/").rsplit("/", 1)[-1], CLIP_TEMPLATES["default"])
        prompts = [template.format(class_name(label)) for label in task.label_names for template in templates]
        inputs = text_tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        return ClassPrompts(dict(inputs), len(templates), len(task.label_names))

    def answers(self, prepared: ClassPrompts) -> list | None:
        return list(range(prepared.labels))

    def condition(self, model: Any, prepared: ClassPrompts) -> Any:
        """The class embeddings, `(num_classes, dim)`: each class's prompts embedded, normalized, averaged over the
        templates and normalized again; then times CLIP's logit scale, so that the scores are CLIP's logits."""
        import torch

        device = next(model.parameters()).device
        inputs = {k: v.to(device) for k, v in prepared.inputs.items()}
        pooled = model.text_model(**inputs).pooler_output
        per_prompt = torch.nn.functional.normalize(model.text_projection(pooled).float(), dim=-1)
        per_class = per_prompt.reshape(prepared.labels, prepared.templates, -1).mean(dim=1)
        return torch.nn.functional.normalize(per_class, dim=-1) * model.logit_scale.float().exp()

    def scores(self, model: Any, batch: dict[str, Any], conditioned: Any) -> Any:
        import torch

        pooled = model.vision_model(pixel_values=batch["pixel_values"].to(model.dtype)).pooler_output
        images = torch.nn.functional.normalize(model.visual_projection(pooled).float(), dim=-1)
        return images @ conditioned.to(images.device).T

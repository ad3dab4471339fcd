"""A tiny image-classification dataset repo: scikit-learn's handwritten digits, as RGB images for the tiny CLIP.

`load_digits` holds 1797 8x8 grayscale digits (values 0..16), shipped inside scikit-learn: no download. Each is
scaled to 0..255, upscaled (nearest neighbour) to the tiny CLIP's image size and made RGB, then written as parquet
with an `image` feature and a `label` ClassLabel named `zero`..`nine`, and a README whose `configs:` and
`dataset_info:` let `datasets.load_dataset` read it from a (local) Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

from .publish import upload, write_dataset_card
from .tiny_models import CLIP_IMAGE_SIZE

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Rows per split: a few dozen, for a 2-core test machine.
DIGIT_ROWS = {"train": 20, "validation": 50}
DIGITS_REPO = "hfsoup-testing/digits"


def digit_images(*, image_size: int = CLIP_IMAGE_SIZE) -> tuple[list, list[int]]:
    """Every digit of `load_digits` as an RGB PIL image of `image_size` pixels a side, and its label (0..9)."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * (255 / 16)).round().astype(np.uint8)
    size = (image_size, image_size)
    images = [Image.fromarray(p).resize(size, Image.NEAREST).convert("RGB") for p in pixels]
    return images, [int(t) for t in digits.target]


def build_digits(
    root: str | os.PathLike, *, rows: dict[str, int] | None = None, image_size: int = CLIP_IMAGE_SIZE
) -> Path:
    """Write the digits dataset folder: `data/{split}-00000-of-00001.parquet` and a README with `configs:`.

    Splits take consecutive digits of `load_digits` (train first), so they do not overlap. Returns `root`.
    """
    import datasets

    root = Path(root)
    rows = rows or DIGIT_ROWS
    images, labels = digit_images(image_size=image_size)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(DIGIT_NAMES))})
    files, split_infos, start = [], [], 0
    for split, n in rows.items():
        table = datasets.Dataset.from_dict(
            {"image": images[start : start + n], "label": labels[start : start + n]}, features=features
        )
        start += n
        path = root / "data" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(str(path))
        files.append({"split": split, "path": f"data/{split}-*"})
        split_infos.append({"name": split, "num_bytes": table.data.nbytes, "num_examples": n})
    card = {
        "pretty_name": "Digits (tiny)",
        "task_categories": ["image-classification"],
        "configs": [{"config_name": "default", "data_files": files}],
        "dataset_info": {"features": features._to_yaml_list(), "splits": split_infos},
    }
    write_dataset_card(
        root,
        card,
        f"# Digits\n\nscikit-learn's 8x8 handwritten digits, upscaled to {image_size}x{image_size} RGB, built by "
        "`hfsoup.testing.digits.build_digits` for tests.",
    )
    return root


def publish_digits(folder: str | os.PathLike, *, repo_id: str = DIGITS_REPO, api=None) -> str:
    """Push a folder from `build_digits` to the dataset repo `repo_id` in one commit; return the commit SHA."""
    return upload(folder, repo_id, repo_type="dataset", message="Digits", api=api)


def tiny_clip_classifier(clip_dir: str | os.PathLike, output_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """A `CLIPForImageClassification` for the digits, its vision tower from the tiny CLIP at `clip_dir`.

    The head is seeded random: the test checks that predictions are valid and scored right, not that they are good.
    """
    import torch
    from transformers import AutoImageProcessor, CLIPConfig, CLIPForImageClassification, CLIPModel

    clip = CLIPModel.from_pretrained(clip_dir)
    config = CLIPConfig.from_pretrained(clip_dir)
    config.num_labels = len(DIGIT_NAMES)
    config.id2label = dict(enumerate(DIGIT_NAMES))
    config.label2id = {name: i for i, name in enumerate(DIGIT_NAMES)}
    torch.manual_seed(seed)
    model = CLIPForImageClassification(config)
    model.vision_model.load_state_dict(clip.vision_model.state_dict())
    model.save_pretrained(output_dir)
    AutoImageProcessor.from_pretrained(clip_dir).save_pretrained(output_dir)
    return Path(output_dir)

"""Put test fixtures on a Hub (the local one in tests): one place for the create-then-upload-in-one-commit step and
for dataset cards, which `datasets` reads its `configs:` from."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def upload(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    message: str | None = None,
    private: bool = False,
    api=None,
) -> str:
    """Create `repo_id` if needed and push `folder` in one commit; return the commit SHA."""
    from huggingface_hub import HfApi

    api = api or HfApi()
    api.create_repo(repo_id, repo_type=repo_type, exist_ok=True, private=private)
    message = message or f"Upload {repo_id.split('/')[-1]}"
    return api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder, commit_message=message).oid


def write_dataset_card(root: str | os.PathLike, metadata: dict, body: str) -> None:
    """README.md with YAML front matter (`configs:`, `dataset_info:`) and a markdown body."""
    text = f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n\n{body}\n"
    Path(root, "README.md").write_text(text, encoding="utf-8")

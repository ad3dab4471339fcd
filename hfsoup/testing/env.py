"""Point the Hugging Face clients at a local Hub, with a fresh cache.

`huggingface_hub`, `datasets` and `evaluate` read `HF_ENDPOINT`, `HF_HOME` and friends once, at import time, into
module constants. Setting the environment is enough for a process that has not imported them yet (the CLI); a test
session or a notebook has, so `use_local_hub` also rewrites those constants and puts everything back on exit.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


def local_hub_environ(endpoint: str, hf_home: str | os.PathLike) -> dict[str, str]:
    """The environment variables that keep every Hugging Face client on `endpoint` and `hf_home`."""
    home = str(hf_home)
    return {
        "HF_ENDPOINT": endpoint.rstrip("/"),
        "HF_HOME": home,
        "HF_HUB_CACHE": os.path.join(home, "hub"),
        "HF_DATASETS_CACHE": os.path.join(home, "datasets"),
        "HF_EVALUATE_CACHE": os.path.join(home, "evaluate"),
        "HF_TOKEN_PATH": os.path.join(home, "token"),
        # The local server speaks plain LFS, not Xet (see shared/HUB-NOTES.md).
        "HF_HUB_DISABLE_XET": "1",
        # Download counters and telemetry go to hosts other than HF_ENDPOINT.
        "HF_UPDATE_DOWNLOAD_COUNTS": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_EVALUATE_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
    }


def _constant_patches(endpoint: str, home: str) -> dict[str, dict[str, object]]:
    endpoint = endpoint.rstrip("/")
    datasets_cache = Path(home) / "datasets"
    evaluate_cache = Path(home) / "evaluate"
    return {
        "huggingface_hub.constants": {
            "ENDPOINT": endpoint,
            "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HOME": home,
            "HF_HUB_CACHE": os.path.join(home, "hub"),
            "HUGGINGFACE_HUB_CACHE": os.path.join(home, "hub"),
            "HF_ASSETS_CACHE": os.path.join(home, "assets"),
            "HF_XET_CACHE": os.path.join(home, "xet"),
            "HF_TOKEN_PATH": os.path.join(home, "token"),
            "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
            "HF_HUB_DISABLE_XET": True,
            "HF_HUB_DISABLE_TELEMETRY": True,
            "HF_HUB_DISABLE_IMPLICIT_TOKEN": True,
            "HF_HUB_OFFLINE": False,
        },
        "datasets.config": {
            "HF_ENDPOINT": endpoint,
            "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
            "HF_CACHE_HOME": home,
            "HF_DATASETS_CACHE": datasets_cache,
            "HF_MODULES_CACHE": Path(home) / "modules",
            "DOWNLOADED_DATASETS_PATH": datasets_cache / "downloads",
            "EXTRACTED_DATASETS_PATH": datasets_cache / "downloads" / "extracted",
            "USE_PARQUET_EXPORT": False,
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
            "HF_HUB_OFFLINE": False,
        },
        "evaluate.config": {
            "HF_ENDPOINT": endpoint,
            "HF_LIST_ENDPOINT": endpoint + "/api/spaces?filter={type}",
            "HUB_EVALUATE_URL": endpoint + "/spaces/{path}/resolve/{revision}/{name}",
            "HF_CACHE_HOME": home,
            "HF_EVALUATE_CACHE": evaluate_cache,
            "HF_METRICS_CACHE": Path(home) / "metrics",
            "HF_MODULES_CACHE": Path(home) / "modules",
            "DOWNLOADED_EVALUATE_PATH": evaluate_cache / "downloads",
            "EXTRACTED_EVALUATE_PATH": evaluate_cache / "downloads" / "extracted",
            "HF_UPDATE_DOWNLOAD_COUNTS": False,
        },
    }


@contextlib.contextmanager
def use_local_hub(endpoint: str, hf_home: str | os.PathLike) -> Iterator[None]:
    """Send every Hugging Face client in this process to `endpoint`, caching under `hf_home`, until exit.

    Tokens from the caller's environment (`HF_TOKEN`) are hidden too, so a developer's real token never reaches the
    local server or a test log.

    Example:
        ```py
        >>> with LocalHubServer(root, anonymous_writes=True) as hub, use_local_hub(hub.url, tmp / "hf_home"):
        ...     HfApi().create_repo("org/name")
        ```
    """
    home = str(hf_home)
    Path(home).mkdir(parents=True, exist_ok=True)
    saved_env = {key: os.environ.get(key) for key in [*local_hub_environ(endpoint, home), "HF_TOKEN"]}
    saved_attrs: list[tuple[object, str, object]] = []
    os.environ.update(local_hub_environ(endpoint, home))
    os.environ.pop("HF_TOKEN", None)
    try:
        for module_name, values in _constant_patches(endpoint, home).items():
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # evaluate or datasets not installed: nothing to patch.
                continue
            for name, value in values.items():
                if hasattr(module, name):
                    saved_attrs.append((module, name, getattr(module, name)))
                    setattr(module, name, value)
        # transformers keeps one HfApi client, built on first use with the endpoint of that moment; drop it so the
        # next call builds one for this Hub (only if transformers is loaded: importing it here would cost seconds).
        hub_module = sys.modules.get("transformers.utils.hub")
        if hub_module is not None and hasattr(hub_module, "_hf_api"):
            saved_attrs.append((hub_module, "_hf_api", hub_module._hf_api))
            hub_module._hf_api = None
        yield
    finally:
        for module, name, value in reversed(saved_attrs):
            setattr(module, name, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

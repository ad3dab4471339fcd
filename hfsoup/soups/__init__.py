"""Soup methods, one module each, and the registry the CLI and recipes look methods up in.

A method decides the mixing weights; `engine.stream_soup` applies them tensor by tensor. Adding a method is adding a
module and a line in `SOUPS`.
"""

from __future__ import annotations

from .base import Mixing, SoupMethod
from .uniform import UniformSoup

SOUPS: dict[str, type[SoupMethod]] = {
    UniformSoup.name: UniformSoup,
}

__all__ = ["SOUPS", "Mixing", "SoupMethod", "UniformSoup"]

"""Prior strategies, registered by name (SPEC §3)."""

from __future__ import annotations

from ..registry import Registry
from .base import Prior, PriorItem, PriorResult

PRIORS: Registry[Prior] = Registry("prior strategy")

from . import ablation, command, dynamic, model, none, pos, pseudo, refined, summarization  # noqa: E402,F401


def make_prior(strategy: str, k: int = 1, **params) -> Prior:
    """Build a prior strategy by name; an unknown name lists the available ones."""
    return PRIORS.get(strategy)(k=k, **params)


__all__ = ["PRIORS", "Prior", "PriorItem", "PriorResult", "make_prior"]

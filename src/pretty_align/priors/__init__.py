"""Prior strategies, registered by name (SPEC §3)."""

from __future__ import annotations

from ..registry import Registry
from .base import Prior, PriorItem, PriorResult

PRIORS: Registry[Prior] = Registry("prior strategy", "pretty_align.priors")

from . import ablation, command, dynamic, model, none, pos, pseudo, refined, summarization  # noqa: E402,F401


def strategy_for(task: str, strategy: str) -> str | None:
    """The registered prior for ``strategy`` in ``task``: the task's own version (``pos-pseudo``: a
    tag lexicon) before the general one, or None when the task has neither."""
    for name in (f"{task}-{strategy}", strategy):
        if name in PRIORS:
            return name
    return None


def make_prior(strategy: str, k: int = 1, **params) -> Prior:
    """Build a prior strategy by name; an unknown name lists the available ones."""
    return PRIORS.get(strategy)(k=k, **params)


__all__ = ["PRIORS", "Prior", "PriorItem", "PriorResult", "make_prior", "strategy_for"]

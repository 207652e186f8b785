"""The ``none`` prior: the plain base-model baseline."""

from __future__ import annotations

from typing import Sequence

from ..boundary import Tokenizer
from . import PRIORS
from .base import Prior, PriorItem, PriorResult


@PRIORS.register("none")
class NoPrior(Prior):
    takes_k = False

    def __init__(self, k: int = 0, **params) -> None:
        super().__init__(k=0, **params)  # k is meaningless without a prior; fixed so keys do not vary with it

    def build(self, items: Sequence[PriorItem], tokenizer: Tokenizer) -> list[PriorResult]:
        return [PriorResult([], "", provenance={"strategy": "none"}) for _ in items]

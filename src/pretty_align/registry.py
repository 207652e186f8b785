"""A tiny name -> class registry. Backends, priors, tasks and metrics each have one.

Looking up an unknown name raises a ``KeyError`` that lists what is available, so a typo in a
config is answered with the valid choices.
"""

from __future__ import annotations

import inspect
from typing import Callable, Generic, Iterable, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls
        return deco

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


def keyword_params(func: Callable, exclude: tuple[str, ...] = ("self",)) -> list[str]:
    """Names ``func`` accepts by keyword (no ``*args``/``**kwargs``), e.g. a registered class's
    ``__init__``: what a config may set for it."""
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in exclude]


def unknown_keywords(func: Callable, given: Iterable[str], exclude: tuple[str, ...] = ("self",)) -> list[str]:
    """The names in ``given`` that ``func`` does not take, sorted; none when it takes ``**kwargs``
    (it then checks unknown names itself)."""
    if any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values()):
        return []
    return sorted(set(given) - set(keyword_params(func, exclude)))

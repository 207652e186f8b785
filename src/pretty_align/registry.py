"""A tiny name -> class registry. Backends, priors, tasks and metrics each have one.

Looking up an unknown name raises a ``KeyError`` that lists what is available, so a typo in a
config is answered with the valid choices.

Third-party packages add to a registry without editing ours, through an entry point in the registry's
group (``pretty_align.backends``, ``pretty_align.priors``, ``pretty_align.tasks``, ``pretty_align.metrics``)::

    [project.entry-points."pretty_align.priors"]
    my-prior = "my_package.priors:MyPrior"

The entry point's name is the registered name and its object the class (a module that registers
its classes with the decorator on import works too). Plugins load on the first lookup, once; a
plugin that fails to import, or takes a name that is already registered, is a ``PluginError``
naming the entry point, not a silently missing choice.
"""

from __future__ import annotations

import inspect
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterable, TypeVar

from .errors import PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group   # the entry-point group of third-party plugins, e.g. pretty_align.priors
        self._items: dict[str, type[T]] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' registered twice")
            self._items[name] = cls
            cls.registry_name = name  # type: ignore[attr-defined]
            return cls
        return deco

    def _load_plugins(self) -> None:
        """Register every entry point of ``self.group`` (once; the flag is set first, so a plugin
        module that looks names up while it loads does not recurse)."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=self.group):
            where = f"{self.kind} plugin '{ep.name}' ({ep.value}, entry point group {self.group})"
            before = dict(self._items)
            try:
                obj = ep.load()
            except Exception as e:   # any import-time failure of foreign code: say whose it is
                raise PluginError(f"{where} failed to load: {type(e).__name__}: {e}") from e
            if not isinstance(obj, type):
                if ep.name in self._items:   # a module that registered its class under this name
                    continue
                raise PluginError(f"{where} is not a class and registered no {self.kind} named '{ep.name}'")
            if ep.name in before:
                raise PluginError(f"{where}: the name '{ep.name}' is taken by {before[ep.name].__module__}."
                                  f"{before[ep.name].__qualname__}")
            if self._items.get(ep.name) is not obj:   # not registered by its own decorator on import
                self.register(ep.name)(obj)

    def get(self, name: str) -> type[T]:
        self._load_plugins()
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} '{name}'; available: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
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

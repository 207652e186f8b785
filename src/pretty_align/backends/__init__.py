"""Model backends, registered by name. ``load_backend(name, model, **options)`` builds one."""

from __future__ import annotations

from ..errors import InputError
from ..registry import Registry, keyword_params, unknown_keywords
from .base import Backend, Capabilities, Generation, GenerationRequest, ScoreResult

BACKENDS: Registry[Backend] = Registry("backend", "pretty_align.backends")

from . import fake, hf, llamacpp, openai, vllm  # noqa: E402,F401  (registration side effects)


def unknown_option(name: str, options: dict) -> str | None:
    """Why ``options`` do not fit backend ``name`` (an option it does not take, listing those it
    takes), or None. Backends that take free-form ``**options`` check them themselves."""
    init = BACKENDS.get(name).__init__
    unknown = unknown_keywords(init, options, exclude=("self", "model"))
    return (f"the {name} backend takes no option '{unknown[0]}'; its options: "
            f"{', '.join(sorted(keyword_params(init, exclude=('self', 'model'))))}" if unknown else None)


def load_backend(name: str, model: str, **options) -> Backend:
    """Build backend ``name`` for ``model`` (alias, path or hub id). Unknown names list the choices;
    an unknown option is refused (``unknown_option``)."""
    problem = unknown_option(name, options)
    if problem:
        raise InputError(problem, field="options")
    return BACKENDS.get(name)(model, **options)


__all__ = ["BACKENDS", "Backend", "Capabilities", "Generation", "GenerationRequest", "ScoreResult", "load_backend"]

"""Model backends, registered by name. ``load_backend(name, model, **options)`` builds one."""

from __future__ import annotations

from ..registry import Registry
from .base import Backend, Capabilities, Generation, GenerationRequest, ScoreResult

BACKENDS: Registry[Backend] = Registry("backend")

from . import fake, hf, llamacpp, openai, vllm  # noqa: E402,F401  (registration side effects)


def load_backend(name: str, model: str, **options) -> Backend:
    """Build backend ``name`` for ``model`` (alias, path or hub id). Unknown names list the choices."""
    return BACKENDS.get(name)(model, **options)


__all__ = ["BACKENDS", "Backend", "Capabilities", "Generation", "GenerationRequest", "ScoreResult", "load_backend"]

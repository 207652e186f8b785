"""Tasks, registered by name."""

from __future__ import annotations

from ..registry import Registry
from .base import Example, Task

TASKS: Registry[Task] = Registry("task", "pretty_align.tasks")

from . import pos, summarization, translation  # noqa: E402,F401

__all__ = ["TASKS", "Example", "Task"]

"""Content hashes and package versions: what makes a result reproducible (SPEC §6)."""

from __future__ import annotations

import hashlib
import json
import platform
from functools import lru_cache
from importlib import metadata
from typing import Any

# Packages whose versions can change model outputs; they are part of every result key.
OUTPUT_PACKAGES = ("pretty-align", "torch", "transformers", "peft", "llama-cpp-python")
# Packages that change scores, not outputs; they go into the metric signatures of a report.
METRIC_PACKAGES = ("sacrebleu", "py3langid", "opencc-python-reimplemented", "unbabel-comet")


@lru_cache(maxsize=None)
def package_versions(names: tuple[str, ...] = OUTPUT_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def canonical(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

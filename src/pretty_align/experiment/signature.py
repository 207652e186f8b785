"""Content hashes, package versions and code identity: what makes a result reproducible (SPEC §6).

Every result key holds ``code_signature()``: a hash of the source of the pretty-align package that
is running. Any change to the code (a prior's algorithm, ``clean_answer``, the stopping rule, a
backend) changes it, so a run never takes a row made by other code for its own. The version string
alone cannot do that: it stays ``0.1.0`` across commits and ignores uncommitted edits.
``code_revision()`` is the human-readable name of that code (setuptools-scm style
``0.1.0.dev68+gff0630d.dirty``); it is stored beside each row for reports, but is not in keys
(two checkouts with identical sources are the same code).
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Packages whose versions can change model outputs; they are part of every result key. pretty-align
# itself is keyed by its source hash (code_signature), which is finer than its version.
OUTPUT_PACKAGES = ("torch", "transformers", "peft", "llama-cpp-python")
# Packages that change scores, not outputs; they go into the metric signatures of a report.
METRIC_PACKAGES = ("sacrebleu", "py3langid", "opencc-python-reimplemented", "unbabel-comet")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]     # the pretty_align package that is running
SOURCE_SUFFIXES = {".py", ".txt", ".toml", ".json"}    # code and the data files shipped with it


@lru_cache(maxsize=None)
def package_versions(names: tuple[str, ...] = OUTPUT_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def source_sha256(root: Path = PACKAGE_ROOT) -> str:
    """sha256 over the relative path and bytes of every source file of the package at ``root``
    (in path order; caches excluded). Equal iff the code is byte-for-byte the same."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.suffix in SOURCE_SUFFIXES and p.is_file() and "__pycache__" not in p.parts:
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@lru_cache(maxsize=None)
def code_signature() -> dict[str, str]:
    """What identifies the running pretty-align code in keys: its version and source hash."""
    try:
        version = metadata.version("pretty-align")
    except metadata.PackageNotFoundError:   # run from a source tree on PYTHONPATH
        version = "unknown"
    return {"pretty-align": version, "source_sha256": source_sha256()[:16]}


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(PACKAGE_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@lru_cache(maxsize=None)
def code_revision() -> str:
    """``<version>.dev<commits>+g<sha>[.dirty]`` when the package runs from a git checkout (dirty:
    uncommitted changes under the package), else ``<version>+src.<source hash>``. For people, not keys."""
    code = code_signature()
    sha = _git("rev-parse", "--short=7", "HEAD")
    count = _git("rev-list", "--count", "HEAD")
    if not sha or not count:
        return f"{code['pretty-align']}+src.{code['source_sha256'][:12]}"
    dirty = _git("status", "--porcelain", "--", ".")
    return f"{code['pretty-align']}.dev{count}+g{sha}{'.dirty' if dirty else ''}"


def canonical(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) for hashing."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical(obj).encode("utf-8")).hexdigest()


def text_hash(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

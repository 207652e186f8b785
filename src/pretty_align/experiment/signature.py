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

from ..decoding import Decoding

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


def compact_signature(sig: dict[str, Any]) -> str:
    """A condition signature as one sacrebleu-style line, ``key:value|key:value``, e.g.
    ``model:gemma3-270m|sha:a5fd3b62|backend:llamacpp|prior:pseudo|k:2|dict:1a2b3c4d|``
    ``dec:greedy,max200,stop\\n|code:0929d038`` (one line; split here for width).

    Keeps what tells the conditions of a run apart, in this order:

    - ``model``: the model spec (a file path shortened to its file name); ``sha``: the weights'
      sha256, else ``rev``: the hub revision; ``adapter``: a LoRA adapter's sha256; ``backend``;
      ``dtype`` where the backend has one; ``batch`` where outputs depend on the batch size;
      ``chat:yes`` when the chat template is on;
    - ``prior`` (the strategy; absent for the reference model's own answer) and ``k``; every file hash
      of the prior (``dict`` for the dictionary, otherwise the field name less ``_sha256``), ``seed``
      and ``choice`` where present; ``from`` for a model prior: that model's spec and ``@`` its sha;
    - ``dec``: the decoding strategy, ``max<N>`` new tokens, each stop string (``stop`` + the string,
      with ``\\n``, ``\\t``, ``\\r``, ``|`` and ``,`` escaped), then any other decoding setting that
      differs from ``Decoding``'s default as ``name=value``;
    - ``code``: the pretty-align source hash.

    Hashes are cut to 8 hex digits. Left out (they are in the full JSON): package versions, the task
    and its template, the prior's flags and word lists, a command prior's command line, the loop
    guard's and length budget's settings when they are the defaults.
    """
    parts: list[tuple[str, str]] = []
    m = sig.get("model") or {}
    if m.get("model"):
        parts.append(("model", _short_model(m["model"])))
    if m.get("sha256"):
        parts.append(("sha", _h8(m["sha256"])))
    elif m.get("revision"):
        parts.append(("rev", _h8(m["revision"])))
    if m.get("adapter_sha256"):
        parts.append(("adapter", _h8(m["adapter_sha256"])))
    parts += [(k, str(m[k])) for k in ("backend", "dtype") if m.get(k)]
    if m.get("batch_size") is not None:
        parts.append(("batch", str(m["batch_size"])))
    if m.get("chat"):
        parts.append(("chat", "yes"))
    parts += _prior_parts(sig.get("prior"))
    if sig.get("decoding"):
        parts.append(("dec", _decoding_part(sig["decoding"])))
    code = (sig.get("code") or {}).get("source_sha256")
    if code:
        parts.append(("code", _h8(code)))
    return "|".join(f"{k}:{v}" for k, v in parts)


def _h8(value: Any) -> str:
    return str(value)[:8]


def _short_model(spec: str) -> str:
    """A local path by its file name; names and hub ids as they are."""
    return Path(spec).name if spec.startswith(("/", "./", "../", "~")) else spec


def _esc_sig(s: str) -> str:
    """A value inside a compact signature: control characters and the separators escaped."""
    for a, b in (("\\", "\\\\"), ("\n", "\\n"), ("\t", "\\t"), ("\r", "\\r"), ("|", "\\|"), (",", "\\,")):
        s = s.replace(a, b)
    return s


def _prior_parts(prior: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not prior:
        return []
    parts = [("prior", str(prior.get("strategy"))), ("k", str(prior.get("k")))]
    for key in sorted(prior):
        if key.endswith("sha256") and prior[key]:
            name = key[:-len("_sha256")] or "sha"
            parts.append(("dict" if name == "dictionary" else name, _h8(prior[key])))
    parts += [(key, str(prior[key])) for key in ("seed", "choice") if prior.get(key) is not None]
    pm = prior.get("model")
    if isinstance(pm, dict) and pm.get("model"):   # a model prior: the model it takes its tokens from
        sha = pm.get("sha256") or pm.get("revision")
        parts.append(("from", _short_model(pm["model"]) + (f"@{_h8(sha)}" if sha else "")))
    return parts


def _decoding_part(dec: dict[str, Any]) -> str:
    items = [str(dec.get("strategy", "greedy")), f"max{dec.get('max_new_tokens')}"]
    items += ["stop" + _esc_sig(s) for s in dec.get("stop") or ()]
    default = Decoding().signature()
    for key in sorted(dec):
        if key not in ("strategy", "max_new_tokens", "stop") and dec[key] != default.get(key):
            items.append(f"{key}={_esc_sig(str(dec[key]))}")
    return ",".join(items)


# -- the page ------------------------------------------------------------------------------------------

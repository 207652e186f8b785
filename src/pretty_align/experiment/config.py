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
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..decoding import LOOP_AFTER, LOOP_MIN_SPAN, Decoding
from ..errors import InputError
from ..languages import get_language
from ..priors.dictionary import INDUCE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class _Strict(BaseModel):
    """Unknown keys are refused; every number has a range and every choice its values, so a
    nonsense config fails at load, naming the field, instead of running."""

    model_config = ConfigDict(extra="forbid")


Dtype = Literal["float32", "bfloat16", "float16", "auto"]   # auto: bfloat16 where the CPU has it (hardware.py)
NonEmpty = Annotated[str, Field(min_length=1)]
Count = Annotated[int, Field(ge=1)]


def _registered(kind: str, name: str) -> str:
    """``name`` if it is registered as a ``kind`` (backend, prior, task), else a ValueError listing them."""
    from ..backends import BACKENDS
    from ..priors import PRIORS
    from ..tasks import TASKS

    registry = {"backend": BACKENDS, "prior": PRIORS, "task": TASKS}[kind]
    names = registry.names()
    if kind == "prior":   # a task-specific strategy (pos-refined) is configured by its plain name
        names = sorted({n.split("-", 1)[1] if n.split("-", 1)[0] in TASKS else n for n in names} | set(names))
    if name not in names:
        raise ValueError(f"unknown {registry.kind} '{name}'; available: {', '.join(names)}")
    return name


BackendName = Annotated[str, AfterValidator(lambda v: _registered("backend", v))]
PriorName = Annotated[str, AfterValidator(lambda v: _registered("prior", v))]
TaskName = Annotated[str, AfterValidator(lambda v: _registered("task", v))]


class ModelConfig(_Strict):
    model: NonEmpty
    backend: BackendName = "hf"
    adapter: str | None = None
    dtype: Dtype = "float32"
    chat: bool | None = None            # None: use the chat template when the model has one
    options: dict[str, Any] = Field(default_factory=dict)   # extra backend options

    @field_validator("options")
    @classmethod
    def _options_fit_the_backend(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from ..backends import unknown_option

        problem = "backend" in info.data and unknown_option(info.data["backend"], v)
        if problem:
            raise ValueError(problem)
        return v


class TaskConfig(_Strict):
    name: TaskName = "translation"
    source: str | None = None             # default: eng_Latn (translation), "same" (XL-Sum summarization)
    targets: list[str] = Field(min_length=1)
    flores: str | None = None
    split: Literal["dev", "devtest", "test", "train"] | None = None   # default: dev (translation), test (pos)
    src_file: str | None = None
    ref_file: str | None = None
    hub: str | None = None
    texts: list[NonEmpty] | None = Field(None, max_length=100_000)   # in-memory sources (serve, Python API)
    n: Count | None = 50                  # examples per target; None: all
    offset: int = Field(0, ge=0)
    template: NonEmpty | None = None
    max_prompt_tokens: int = Field(1024, ge=16, le=1_000_000)
    data: str | None = None               # summarization: JSONL path pattern ({tgt_iso1}, {src}, ...)
    format: Literal["xlsum", "crosssum"] | None = None        # summarization (default xlsum)
    treebank: Literal["xglue", "pud"] | None = None           # pos (default xglue)
    answer_format: Literal["word/tag", "tags"] | None = None  # pos (default word/tag)
    shots: int | None = Field(None, ge=0, le=64)              # pos: demonstrations from another split (default 0)
    shots_split: Literal["dev", "test", "train"] | None = None   # pos: where demonstrations come from (default dev)

    @field_validator("targets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for code in v:
            get_language(code, field="task.targets")
        if len(set(v)) != len(v):
            raise ValueError("a target language is listed twice")
        return v


class DecodingConfig(_Strict):
    max_new_tokens: int = Field(200, ge=1, le=100_000)
    length_ratio: float = Field(2.5, gt=0, le=1000)      # budget = min(max_new_tokens, ratio * source + slack)
    length_slack: int = Field(16, ge=0, le=100_000)
    stop: list[NonEmpty] = Field(default_factory=lambda: ["\n"])
    loop_guard: bool = True
    loop_max_period: int = Field(16, ge=1, le=256)
    loop_min_repeats: int = Field(4, ge=2, le=1000)
    loop_min_span: int = Field(LOOP_MIN_SPAN, ge=1, le=100_000)   # tokens a loop must cover before it stops a row
    loop_after: float = Field(LOOP_AFTER, ge=0, le=1)      # ... and the share of the row's budget it must be past
    batch_size: int = Field(8, ge=1, le=4096)

    def build(self) -> Decoding:
        return Decoding(**{**self.model_dump(), "stop": tuple(self.stop)})


class PriorConfig(_Strict):
    strategy: PriorName
    k: list[Annotated[int, Field(ge=0, le=64)]] = Field(default_factory=lambda: [1], min_length=1)
    name: NonEmpty | None = None         # condition label; default "<strategy> k=<k>"
    model: str | None = None             # model / sft priors: "reference" or a model string
    backend: BackendName = "hf"
    chat: bool | None = None
    dtype: Dtype = "float32"
    dictionary: str | dict[str, str] | None = None
    stopwords: str | None = None
    command: NonEmpty | dict[str, NonEmpty] | None = None   # a command, with {tgt_iso1}-style placeholders, or one per target
    params: dict[str, Any] = Field(default_factory=dict)   # strategy parameters (each strategy checks its own)
    # The prior-quality curve: one condition per probability p of replacing the prior with a random
    # target-language word of the same token length (priors/corrupt.py); [] = the prior as built.
    corrupt: list[Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=list, max_length=21)
    corrupt_seed: int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("k", "corrupt", mode="before")
    @classmethod
    def _as_list(cls, v: Any) -> Any:
        return v if isinstance(v, (list, tuple)) else [v]

    @field_validator("k", "corrupt")
    @classmethod
    def _distinct(cls, v: list, info: Any) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"a value of {info.field_name} is listed twice")
        return v


class MetricsConfig(_Strict):
    comet_checkpoint: str | None = None
    langid_langs: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] | None = Field(None, min_length=1)
    # "% ref" of a language whose reference score is below this is shown as n/a (ratios explode near 0)
    ratio_floor: float = Field(1.0, ge=0)


class AnalysisConfig(_Strict):
    """``[analysis]``: the decision-space analysis of ``pretty-align analyze`` (SPEC §5)."""
    n: Count | None = None               # examples per language; default: task.n
    top_k: int = Field(10, ge=1, le=1000)   # the "silent majority" cut-off and the overlap size
    priors: list[Annotated[int, Field(ge=0, le=64)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    batch_size: int = Field(8, ge=1, le=4096)   # examples per teacher-forced pass
    chunk: int = Field(256, ge=1)        # positions whose full-vocabulary log-probs are alive at once
    max_positions: int = Field(24, ge=1) # positions shown in the by-position tables and plots
    mode: Literal["auto", "exact"] = "auto"   # auto: exact when the tokenizers match, else text (approximate)


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.+-]+$")   # also a file name
    store: str | None = None             # default: runs/<name>.sqlite next to the config
    store_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"   # FULL: every commit survives a power loss
    report_dir: str | None = None        # default: runs/<name>/
    base: ModelConfig
    reference: ModelConfig | None = None
    task: TaskConfig
    decoding: DecodingConfig = Field(default_factory=DecodingConfig)
    priors: list[PriorConfig] = Field(default_factory=lambda: [PriorConfig(strategy="none", k=[0])], min_length=1)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    config_dir: str = "."

    @model_validator(mode="after")
    def _strategies_fit_the_task(self) -> "ExperimentConfig":
        """Each prior strategy exists for this task (e.g. ``refined`` is a translation and a POS prior,
        not a summarization one), so a config is refused before any model is loaded."""
        from ..priors import PRIORS, strategy_for
        from ..tasks import TASKS

        task = self.task.name
        for i, p in enumerate(self.priors):
            if strategy_for(task, p.strategy) is None:
                others = set(TASKS.names()) - {task}   # another task's own priors are not offered
                offered = sorted({n.removeprefix(f"{task}-") for n in PRIORS.names() if n.split("-", 1)[0] not in others})
                raise ValueError(f"priors.{i}.strategy: '{p.strategy}' is not a {task} prior; for {task}: "
                                 f"{', '.join(offered)}")
        return self

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
    if key in path_keys and value.startswith(INDUCE):   # induce:SRC|TGT (a lexicon from parallel text)
        return INDUCE + "|".join(str((base / p).resolve()) if p.startswith(("./", "../")) else p
                                 for p in value[len(INDUCE):].split("|"))
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
        # union members add their type to the location ("command.constrained-str"): keep field names
        loc = ".".join(str(x) for x in first["loc"] if isinstance(x, int) or str(x).isidentifier())
        msg = first["msg"]
        whole = re.match(r"Value error, ([\w.\[\]]+): (.*)", msg, re.DOTALL)
        if not loc and whole:   # a check across fields names its field first ("priors[0].strategy: ...")
            loc, msg = whole.groups()
        raise InputError(f"{msg} ({len(e.errors())} error(s) in all)", path=str(path), field=loc) from None


def merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: tables merge key by key (recursively), anything else (a value, an
    array such as ``[[priors]]``) is replaced whole.

    A model table's ``options`` belong to its ``backend``: where ``top`` names another backend than
    ``base``, ``base``'s options are dropped (``top``'s own, if any, stand alone). Merging them would
    hand one backend's settings (llama.cpp's ``n_threads``) to another, which refuses them."""
    out = dict(base)
    if "backend" in top and "backend" in base and top["backend"] != base["backend"]:
        out.pop("options", None)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def composed(path: Path, overrides: dict[str, Any] | None = None, *, path_keys: set[str] = _PATH_KEYS,
             chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config at ``path`` over the ones it ``extends`` (a path or a list, relative to it; later
    ones win, the file itself wins over all). Each file's relative paths are resolved against its
    own folder before merging, so a shared base file can name its data relative to itself."""
    path = path.resolve()
    if path in chain:
        raise InputError("configs extend each other in a cycle: " + " -> ".join(str(p) for p in (*chain, path)),
                         path=str(path), field="extends")
    raw = read_toml(path, overrides)
    parents = raw.pop("extends", [])
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
        raise InputError("expected a config path or a list of them, relative to this file", path=str(path),
                         field="extends")
    out: dict[str, Any] = {}
    for parent in parents:
        parent_path = path.parent / _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), parent)
        if not parent_path.is_file():
            raise InputError(f"the config it extends, {parent_path}, does not exist", path=str(path), field="extends")
        out = merge(out, composed(parent_path, path_keys=path_keys, chain=(*chain, path)))
    return merge(out, _expand(raw, path.parent, path_keys=path_keys))


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a config (composed with the configs it ``extends``); errors name the file
    and the offending field. ``--set`` overrides apply to the composed config."""
    path = Path(path)
    raw = composed(path, overrides)
    raw["config_dir"] = str(path.parent.resolve())
    return _validate(ExperimentConfig, raw, path)

"""SFT build configuration: a TOML file validated by pydantic (same conventions as experiment configs:
``${VAR:-default}`` expansion, relative paths resolved against the file's directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..errors import InputError
from ..experiment.config import _Strict, _validate, composed
from ..languages import get_language


class SFTBaseConfig(_Strict):
    model: str                                   # known name, GGUF file, model directory or hub id
    # compute dtype; LoRA weights stay float32. "auto": bfloat16 where the CPU has it natively
    # (AVX512-BF16 or AMX), else float32 (hardware.py: emulated bf16 training is ~60x slower)
    dtype: Literal["float32", "bfloat16", "auto"] = "float32"


class SFTDataConfig(_Strict):
    dir: str                                     # Tatoeba layout: eng-XXX.eng / eng-XXX.XXX (+ .labels)
    source: str = "eng_Latn"
    targets: list[str]
    per_language: int = Field(300, ge=1)
    validation_share: float = Field(0.05, gt=0, lt=1)
    max_tokens: int = Field(160, ge=8)           # drop longer examples (prompt + answer + stop + EOS)
    seed: int = 0
    template: str | None = None                  # the task template; default: the experiments' default
    stop: str = "\n"                             # appended to every answer (the experiments' stop string)

    @field_validator("targets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one target language")
        for code in v:
            get_language(code, field="data.targets")
        return v


class LoraConfigModel(_Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                              "gate_proj", "up_proj", "down_proj"])


class TrainConfig(_Strict):
    epochs: int = Field(1, ge=1)
    max_steps: int | None = Field(None, ge=1)    # optimizer steps; default: epochs over the training set
    batch_size: int = Field(8, ge=1)             # examples per forward pass
    grad_accum: int = Field(2, ge=1)             # forward passes per optimizer step
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    bucket_batches: int = Field(16, ge=1)        # length bucketing: sort within windows of this many batches
    eval_every: int = Field(25, ge=1)            # optimizer steps between validation passes
    patience: int = Field(3, ge=1)               # validation passes without improvement before stopping
    min_delta: float = Field(0.0, ge=0)
    checkpoint_every: int = Field(25, ge=1)      # optimizer steps between checkpoints (resume after a kill)
    keep_checkpoints: int = Field(2, ge=1)
    threads: int | None = None


class SFTConfig(_Strict):
    name: str
    output: str                                  # build directory: adapter/, checkpoints/, merged/
    base: SFTBaseConfig
    data: SFTDataConfig
    lora: LoraConfigModel = Field(default_factory=LoraConfigModel)
    train: TrainConfig = Field(default_factory=TrainConfig)
    config_path: str | None = None               # the file it was read from (for the model card)

    @property
    def output_path(self) -> Path:
        return Path(self.output)

    def fingerprint_fields(self) -> dict[str, Any]:
        """Everything that determines the trained weights (not where they go or how often they are saved)."""
        train = self.train.model_dump(exclude={"checkpoint_every", "keep_checkpoints", "threads"})
        return {"base": self.base.model_dump(), "data": self.data.model_dump(exclude={"dir"}),
                "lora": self.lora.model_dump(), "train": train}


_PATHS = {"output", "dir", "model"}


def load_sft_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SFTConfig:
    """Read and validate an SFT config; errors name the file and the offending field."""
    path = Path(path)
    raw = composed(path, overrides, path_keys=_PATHS)   # with the configs it extends
    raw["config_path"] = str(path)
    cfg = _validate(SFTConfig, raw, path)
    if not Path(cfg.data.dir).is_dir():
        raise InputError("SFT data directory not found (expected the Tatoeba layout eng-XXX.eng / eng-XXX.XXX)",
                         path=cfg.data.dir)
    return cfg

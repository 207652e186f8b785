"""Shared fixtures: a tokenizer trained on the fly and tiny random causal LMs built in code.

No downloads: the tokenizer is a SentencePiece-style BPE ("▁" word marker, byte fallback) trained
on a few sentences, so characters it never saw (e.g. most CJK) are spelled as <0xNN> byte tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# The user's model cache (dequantized GGUF checkpoints): only the real-model tests use it.
USER_CACHE = os.environ.get("PRETTY_ALIGN_CACHE", str(Path.home() / ".cache" / "pretty_align"))


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


def build_model(kind: str, vocab_size: int, sliding_window: int = 6):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, initializer_range=0.3, tie_word_embeddings=True)
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


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED / "flores200").is_dir():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED

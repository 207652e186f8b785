"""``pretty-align serve`` (issue 15.3): the official openai client against the real server on
127.0.0.1; the fake backend for the API, a tiny hf model for token streaming and disconnects."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import require_module

require_module("fastapi", "-e '.[serve]'")
require_module("uvicorn", "-e '.[serve]'")
require_module("openai", "-e '.[test]'")

import httpx  # noqa: E402
import openai  # noqa: E402
import uvicorn  # noqa: E402

from pretty_align.backends import load_backend  # noqa: E402
from pretty_align.errors import InputError  # noqa: E402
from pretty_align.serve import create_app, load_serve_config  # noqa: E402

CONFIG = """
name = "served"
[base]
model = "{model}"
backend = "{backend}"
[task]
source = "eng_Latn"
[decoding]
{decoding}
[[priors]]
strategy = "none"
[[priors]]
strategy = "function-word"
k = 3
[serve]
targets = ["deu_Latn", "fra_Latn"]
default_target = "deu_Latn"
name = "{name}"
max_tokens = 200
max_body_bytes = 4096
max_prompt_tokens = 300
"""


class Server:
    """uvicorn on 127.0.0.1, an ephemeral port, in a thread."""

    def __init__(self, asgi) -> None:
        self.server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(300):
            if self.server.started:
                break
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start(tmp_path: Path, *, model="fake:echo", backend="fake", name="fake", api_key=None,
          decoding="max_new_tokens = 64", reference: str | None = None, generate=None, **settings_update):
    """A server for CONFIG; ``reference``: a [reference] model; ``generate(inner, requests, decoding,
    on_done)``: replaces the loaded backend's ``generate``; ``settings_update``: [serve] fields."""
    text = CONFIG.format(model=model, backend=backend, name=name, decoding=decoding)
    if reference:
        text = text.replace("[[priors]]", f'[reference]\nmodel = "{reference}"\nbackend = "fake"\n[[priors]]', 1)
    cfg_path = tmp_path / f"serve-{name}.toml"
    cfg_path.write_text(text)
    cfg, settings = load_serve_config(cfg_path)
    factory = load_backend if generate is None else lambda *a, **kw: Wrapped(load_backend(*a, **kw), generate)
    asgi, app = create_app(cfg, settings.model_copy(update=settings_update), api_key=api_key, backend_factory=factory)
    return Server(asgi), app


class Wrapped:
    """A backend whose ``generate`` is ``generate(inner, ...)``; everything else is ``inner``'s."""

    def __init__(self, inner, generate) -> None:
        self._inner, self._generate = inner, generate

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def generate(self, requests, decoding, on_done=None):
        return self._generate(self._inner, requests, decoding, on_done)


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    server, app = start(tmp_path_factory.mktemp("serve"))
    yield server, app
    server.close()


@pytest.fixture(scope="module")
def client(fake_server):
    return openai.OpenAI(base_url=fake_server[0].url + "/v1", api_key="unused", max_retries=0)


def test_models_lists_each_prior_as_a_model(client):
    assert sorted(m.id for m in client.models.list()) == ["fake+function-word-k3", "fake+none"]


def test_completions_and_chat_translate_into_the_asked_language(client):
    out = client.completions.create(model="fake+none", prompt="The cat sits on the mat.", max_tokens=40)
    assert out.choices[0].text == "The cat sits on the mat."            # fake:echo copies the source line
    assert out.usage.completion_tokens > 0 and out.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model="fake+function-word-k3", max_tokens=40,
                                          messages=[{"role": "user", "content": "The dog runs."}],
                                          extra_body={"target_lang": "fra_Latn"})
    assert chat.choices[0].message.content.startswith("de")             # the French function-word prior
    assert chat.model_extra["pretty_align"]["target_lang"] == "fra_Latn"
    suffix = client.chat.completions.create(model="fake+function-word-k3@deu_Latn",
                                            messages=[{"role": "user", "content": "The dog runs."}])
    assert suffix.choices[0].message.content.startswith("di")


def test_a_trailing_assistant_message_is_the_callers_own_prior(client):
    out = client.chat.completions.create(
        model="fake+none", messages=[{"role": "user", "content": "The dog runs."},
                                     {"role": "assistant", "content": "Der Hund"}],
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert out.choices[0].message.content.startswith("Der Hund")
    assert out.model_extra["pretty_align"]["prior_ids"]
    with pytest.raises(openai.BadRequestError, match="continue_final_message"):
        client.chat.completions.create(model="fake+none", messages=[{"role": "user", "content": "x"}],
                                       extra_body={"continue_final_message": True, "add_generation_prompt": False})


def test_streaming_gives_the_same_text(client):
    whole = client.chat.completions.create(model="fake+none", messages=[{"role": "user", "content": "A red car."}])
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="fake+none", messages=[{"role": "user", "content": "A red car."}], stream=True)]
    assert "".join(parts) == whole.choices[0].message.content


@pytest.mark.parametrize("kwargs, error, message", [
    ({"model": "nonesuch+none"}, openai.NotFoundError, "not served here"),
    ({"model": "../../etc/passwd"}, openai.NotFoundError, "not served here"),
    ({"model": "fake+none", "extra_body": {"target_lang": "jpn_Jpan"}}, openai.BadRequestError, "not served"),
    ({"model": "fake+none", "max_tokens": 5000}, openai.BadRequestError, "over the server's limit of 200"),
    ({"model": "fake+none", "n": 2}, openai.BadRequestError, "n"),
    ({"model": "fake+none", "messages": [{"role": "user", "content": "word " * 200}]}, openai.BadRequestError,
     "over the server's limit of 300 tokens"),
    ({"model": "fake+none", "messages": [{"role": "user", "content": "x" * 5000}]}, openai.APIStatusError,
     "over the server's limit of 4096 bytes"),
])
def test_bad_requests_get_a_clear_4xx_and_the_server_lives_on(client, kwargs, error, message):
    args = {"messages": [{"role": "user", "content": "The cat."}], **kwargs}
    with pytest.raises(error, match=message) as e:
        client.chat.completions.create(**args)
    assert 400 <= e.value.status_code < 500
    assert client.models.list().data   # still serving


def test_the_clients_stop_strings_cut_the_answer(client):
    # OpenAI's `stop`: the answer ends before the first of them (it was accepted and ignored)
    out = client.completions.create(model="fake+none", prompt="The cat sits on the mat.", stop=["mat", "sits"])
    assert out.choices[0].text == "The cat" and out.choices[0].finish_reason == "stop"
    parts = [c.choices[0].text for c in client.completions.create(model="fake+none", prompt="The cat sits on the mat.",
                                                                   stop="on", stream=True)]
    assert "".join(parts) == "The cat sits"
    with pytest.raises(openai.BadRequestError, match="stop"):
        client.completions.create(model="fake+none", prompt="The cat.", stop=["a", "b", "c", "d", "e"])


def test_a_stop_string_inside_the_callers_prefix_does_not_end_the_answer(client):
    # Stop strings end generated text only (as on OpenAI-style servers): the caller's own start of
    # the answer may hold one, and the answer still goes on. (It was cut inside the prefix, and the
    # row ended at its first token.)
    msgs = [{"role": "user", "content": "The dog runs."}, {"role": "assistant", "content": "Der Hund"}]
    extra = {"continue_final_message": True, "add_generation_prompt": False}
    whole = client.chat.completions.create(model="fake+none", messages=msgs, extra_body=extra).choices[0]
    text = whole.message.content
    assert text.startswith("Der Hund") and len(text) > len("Der Hund ") and text.count("Hund") == 1
    for stream in (False, True):
        got = client.chat.completions.create(model="fake+none", messages=msgs, extra_body=extra, stop=["Hund"],
                                             stream=stream)
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in got) == text
        else:
            assert got.choices[0].message.content == text and got.choices[0].finish_reason == whole.finish_reason
    # after the prefix a stop string still cuts
    after = text[len("Der Hund"):].split()[0]
    cut = client.chat.completions.create(model="fake+none", messages=msgs, extra_body=extra, stop=[after, "Der"])
    assert cut.choices[0].message.content == text[:text.index(after, len("Der Hund"))].rstrip()
    assert cut.choices[0].finish_reason == "stop"


def test_malformed_bodies_get_400(fake_server):
    url = fake_server[0].url
    r = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "error" in r.json()
    r = httpx.post(url + "/v1/chat/completions", json={"model": "fake+none", "messages": []})
    assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
    r = httpx.post(url + "/v1/completions", json={"model": "fake+none", "prompt": ["a", "b"]})
    assert r.status_code == 400 and "one prompt" in r.json()["error"]["message"]


def test_concurrent_requests_are_batched(fake_server, client):
    app = fake_server[1]
    before = app.state.worker.batches
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: client.completions.create(model="fake+none", prompt=f"Sentence {i}."),
                             range(32)))
    assert [o.choices[0].text for o in outs] == [f"Sentence {i}." for i in range(32)]
    assert app.state.worker.batches - before < 32


def test_an_api_key_is_required_when_set(tmp_path):
    server, _ = start(tmp_path, api_key="s3cret", name="locked")
    try:
        url = server.url + "/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        assert httpx.get(url + "/models").status_code == 401
        ok = openai.OpenAI(base_url=url, api_key="s3cret", max_retries=0)
        assert [m.id for m in ok.models.list()] == ["locked+none", "locked+function-word-k3"]
    finally:
        server.close()


def test_the_reference_model_answers_as_itself(tmp_path):
    """A config with a reference model (the SFT counterpart) serves it as ``<name>+reference``: that
    model answers, not the base model with no prior (which it did)."""
    server, _ = start(tmp_path, name="ref", reference="fake:upper")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        assert "ref+reference" in [m.id for m in client.models.list()]
        with ThreadPoolExecutor(4) as pool:   # in one batch with the base model's requests too
            outs = list(pool.map(lambda m: client.completions.create(model=m, prompt="The cat sits."),
                                 ["ref+reference", "ref+none", "ref+reference", "ref+none"]))
        assert [o.choices[0].text for o in outs] == ["THE CAT SITS.", "The cat sits."] * 2
    finally:
        server.close()


def test_one_requests_bad_input_fails_only_that_request(tmp_path):
    """A backend call that raises InputError for one request's input (here: a prefill longer than
    the context allows) fails that request alone; the others batched with it are answered."""
    def small_context(inner, requests, decoding, on_done):   # the fake backend, with room for 12 prior tokens
        if any(len(r.prior_ids) > 12 for r in requests):
            raise InputError("the prior does not fit n_ctx", field="options.n_ctx")
        return inner.generate(requests, decoding, on_done)

    # batch_wait_ms: the three requests below share one backend call
    server, _ = start(tmp_path, name="small", generate=small_context, batch_wait_ms=300.0)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)

        def ask(prefix):
            msgs = [{"role": "user", "content": "The dog runs."}]
            extra = {}
            if prefix:
                msgs.append({"role": "assistant", "content": prefix})
                extra = {"continue_final_message": True, "add_generation_prompt": False}
            try:
                return client.chat.completions.create(model="small+none", messages=msgs,
                                                      extra_body=extra).choices[0].message.content
            except openai.BadRequestError as e:
                return e

        with ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(ask, [None, "Der Hund " * 10, None]))
        assert outs[0] == outs[2] == "The dog runs."
        assert isinstance(outs[1], openai.BadRequestError) and "n_ctx" in str(outs[1])
        too_long = ask("Hund " * 400)   # refused before it is queued: prompt + prefix over max_prompt_tokens
        assert isinstance(too_long, openai.BadRequestError) and "assistant prefix" in str(too_long)
    finally:
        server.close()


def test_a_server_side_failure_is_a_500_without_its_internals(tmp_path, caplog):
    def broken(inner, requests, decoding, on_done):
        raise RuntimeError("cannot read /secret/path/model.bin")

    server, _ = start(tmp_path, name="broken", generate=broken)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with caplog.at_level(logging.ERROR), pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model="broken+none", prompt="The cat.")
        assert "RuntimeError" in str(e.value) and "/secret/path" not in str(e.value)
        assert any("/secret/path" in (r.exc_text or "") or "/secret/path" in str(r.exc_info) for r in caplog.records)
    finally:
        server.close()


def test_a_bad_config_is_refused_before_serving(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.format(model="fake:echo", backend="fake", name="x", decoding="").replace(
        'targets = ["deu_Latn", "fra_Latn"]', 'targets = ["xx_Latn"]'))
    with pytest.raises(InputError, match="serve.targets"):
        load_serve_config(cfg)
    cfg.write_text("[base]\nmodel = 'fake:echo'\nbackend = 'fake'\n")
    with pytest.raises(InputError, match=r"\[serve\]"):
        load_serve_config(cfg)


def test_tokens_stream_one_step_at_a_time_and_a_disconnect_frees_the_row(tmp_path, tiny_model_dir):
    """A step-hook backend (a tiny hf model): text arrives in several chunks (decoding stops at a
    line break, so the line being written is the answer), and a client that leaves mid-stream ends
    its row at the next step instead of running to its budget."""
    server, app = start(tmp_path, model=str(tiny_model_dir), backend="hf", name="tiny",
                        decoding="max_new_tokens = 200\nstop = [\"\\n\"]\nloop_guard = false\nlength_ratio = 1000")
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        msgs = [{"role": "user", "content": "The cat sits on the mat."}]
        whole = client.chat.completions.create(model="tiny+none", messages=msgs, max_tokens=12)
        parts = [c.choices[0].delta.content for c in client.chat.completions.create(
            model="tiny+none", messages=msgs, max_tokens=12, stream=True) if c.choices[0].delta.content]
        assert len(parts) >= 2 and "".join(parts) == whole.choices[0].message.content
        # The client's stop string: the answer ends before it, the row ends there, streamed or not.
        text = whole.choices[0].message.content
        stop = text[len(text) // 2:len(text) // 2 + 2]
        cut = client.chat.completions.create(model="tiny+none", messages=msgs, max_tokens=12, stop=[stop])
        assert cut.choices[0].message.content == text[:text.find(stop)].rstrip()
        assert cut.choices[0].finish_reason == "stop" and cut.usage.completion_tokens < whole.usage.completion_tokens
        parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny+none", messages=msgs, max_tokens=12, stop=stop, stream=True)]
        assert "".join(parts) == cut.choices[0].message.content
        # An echoed target label is dropped from the answer: the stream must not have sent it first.
        prefixed = msgs + [{"role": "assistant", "content": "German: Der"}]
        extra = {"continue_final_message": True, "add_generation_prompt": False}
        whole = client.chat.completions.create(model="tiny+none", messages=prefixed, max_tokens=12, extra_body=extra)
        parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny+none", messages=prefixed, max_tokens=12, stream=True, extra_body=extra)]
        assert whole.choices[0].message.content.startswith("Der") and "".join(parts) == whole.choices[0].message.content
        # A stop string inside the caller's prefix does not end the row (the step hook's check); one
        # in the generated text after it does.
        content = whole.choices[0].message.content
        after = content.find("Der", len("Der"))
        kept = client.chat.completions.create(model="tiny+none", messages=prefixed, max_tokens=12, stop=["Der"],
                                              extra_body=extra)
        assert kept.choices[0].message.content == (content if after == -1 else content[:after].rstrip()) != ""
        if after == -1:
            assert kept.usage.completion_tokens == whole.usage.completion_tokens
        worker = app.state.worker
        with httpx.stream("POST", server.url + "/v1/chat/completions", timeout=60,
                          json={"model": "tiny+none", "messages": msgs, "max_tokens": 200, "stream": True}) as r:
            for i, _ in enumerate(r.iter_lines()):
                if i >= 4:
                    break   # leave after a few chunks
        for _ in range(200):
            if len(worker.finished) == 8:
                break
            time.sleep(0.05)
        _, n_new, reason = worker.finished[-1]
        assert reason == "eos" and n_new < 200
    finally:
        server.close()


def test_an_over_long_prompt_is_refused_without_being_cut_logged_or_cached(fake_server, client, caplog):
    """A server refuses a prompt over max_prompt_tokens (400); it must not first truncate it as a run
    would, warn about a cut that never happens, or keep the refused prompt."""
    worker = fake_server[1].state.worker
    cached = len(worker.base._prompts)
    with caplog.at_level(logging.WARNING), pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake+none", messages=[{"role": "user", "content": "word " * 200}])
    assert e.value.code == "context_length_exceeded"
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    assert worker.base.truncated_count == 0 and len(worker.base._prompts) == cached

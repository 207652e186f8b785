"""OpenAI-compatible ``/v1/completions`` servers (vLLM, SGLang, TGI, llama.cpp's servers) as a backend.

Options (``[base] options`` in a config):

* ``base_url``: one URL or a list (``http://host:8000`` or ``.../v1``). Requests go to the least busy
  URL (ties in turn), so several machines serve one run; a retry may land on another URL. Every
  URL must serve ``model`` with the same ``/v1/models`` entry.
* ``model`` (the positional argument): the served model name, as ``/v1/models`` lists it.
* ``tokenizer``: the *local* tokenizer (a known model name or ``.gguf`` file -> ``GGUFTokenizer``;
  a model directory or hub id -> ``transformers.AutoTokenizer``); default: ``model`` itself.
  Prompts are encoded, priors cut and outputs rendered with it, so it must be the server's.
* ``api_key`` (default ``$OPENAI_API_KEY``), ``concurrency`` (requests in flight, default 4),
  ``timeout`` (seconds per request, default 60), ``max_retries`` (default 5), ``backoff``
  (first retry delay in seconds, default 0.5, doubled per retry, with jitter, at most
  ``max_backoff`` = 30).
* ``prompt_format``: ``"ids"`` sends ``prompt + prior`` as token ids, the exact model input
  (vLLM accepts them); ``"text"`` sends ``tokenizer.decode`` of the ids without the leading BOS
  (the server adds it), which a server re-tokenizes, so a prior cut inside a word or character
  reaches the model only approximately (counted in ``retokenized_mismatches`` and logged);
  ``"auto"`` (default) asks each server once with a one-token request and uses ids where all
  accept them. llama-cpp-python's server does not (HTTP 500 for a list of ints).
* ``stream`` (default true): stream completions and close each one as soon as the stopping rule
  ends its row (see Generation); a server that answers with plain JSON is read as it is, and an
  interrupted stream is read again whole. Start llama-cpp-python's server with
  ``--interrupt_requests false``: by default it interrupts a stream whenever another request waits.
* ``revision``, ``sha256``: what the server's weights are, as far as you know (a server does not
  say): a hub commit/tag, and the sha256 of the weight file (64 hex digits). Both go into the
  signature (None when not given), so results can be tied to exact weights.
* ``extra_body``: fields merged into every completion request. The default
  ``{"repeat_penalty": 1.0}`` turns off llama-cpp-python's server-side repeat penalty (1.1 by
  default, which would make temperature 0 not plain greedy); other servers ignore the field.

Retries: HTTP 429, 5xx, refused or dropped connections and timeouts are retried up to
``max_retries`` times with exponential backoff and jitter, waiting at least what a ``Retry-After``
header asks; any other 4xx is not retried and raises ``ServerError`` with the server's message.
When a request finally fails, requests not yet sent are cancelled, those in flight are finished
(their results still reach ``on_done``), and then the error is raised.

Generation: greedy (``temperature=0``), ``max_tokens`` = the row budget, no server-side ``stop``:
the stopping rule is applied here through ``decoding.RowState`` (the one rule of every backend) to
the returned tokens: the server's token ids where it returns them (vLLM's ``return_token_ids``,
probed once), otherwise the returned text re-encoded with the local tokenizer. With re-encoded text
the completion is streamed (``stream``, default true) and the connection closed as soon as the rule
ends the row, which makes the server abort it; otherwise (or with ``stream = false``) a row runs on
in the server past its stop string, at most to its budget. ``on_done`` is called in the calling thread as each request completes.

The signature holds the served model's ``/v1/models`` entry (stable fields only; its ``id`` is the
served model id), the user-given ``revision`` and ``sha256`` (None when unknown), the local
tokenizer's fingerprint, the prompt format, where output ids come from and the sampling fields,
but never a URL or key: results do not depend on which machine served them. Outputs may depend on
what else a server is running (vLLM batches in bf16), which no client can control, so the backend
declares ``batch_invariant=True`` and results are keyed without a batch size. Scoring is the top-N
approximation from ``echo`` + ``logprobs`` (``exact_scoring=False``); full-vocabulary
distributions are not available over HTTP (``answer_logprobs`` raises ``CapabilityError``).
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from email.utils import parsedate_to_datetime
from typing import Callable, Any, Iterator, Sequence

from ..boundary import Tokenizer, tokenizer_fingerprint
from ..decoding import Decoding, RowState
from ..errors import CapabilityError, InputError, PrettyAlignError
from ..models import resolve_model
from . import BACKENDS
from .base import Backend, Capabilities, Generation, GenerationRequest, OnDone, ScoreResult, refuse_hooks

log = logging.getLogger(__name__)
PROMPT_FORMATS = ("auto", "ids", "text")
MODEL_FIELDS = ("id", "root", "parent", "owned_by", "max_model_len")   # stable /v1/models fields
DEFAULT_EXTRA_BODY = {"repeat_penalty": 1.0}
SHA256 = re.compile(r"[0-9a-f]{64}")
LOOP_CHECK_EVERY = 8   # streamed chunks between full checks of the stopping rule (see OpenAIBackend._stops)


class ServerError(PrettyAlignError):
    """A server refused a request (``status`` set), or gave no usable answer after all retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def normalize_url(url: str) -> str:
    """``http://host:port`` -> ``http://host:port/v1``; a URL with a path is kept as given."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InputError(f"base_url {url!r} is not an http(s) URL", field="options.base_url")
    url = url.rstrip("/")
    return url + "/v1" if urllib.parse.urlsplit(url).path in ("", "/") else url


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _message(body: bytes) -> str:
    """The error message in an OpenAI-style error body, else the body itself (shortened)."""
    text = body.decode("utf-8", errors="replace")
    try:
        err = json.loads(text)
        err = err.get("error", err) if isinstance(err, dict) else err
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("detail") or err)
        elif isinstance(err, str):
            text = err
    except ValueError:
        pass
    return text.strip()[:500]


class Client:
    """JSON over HTTP to one or more equivalent servers, with retries. Thread-safe."""

    def __init__(self, urls: list[str], *, api_key: str | None, timeout: float, max_retries: int,
                 backoff: float, max_backoff: float) -> None:
        self.urls, self.timeout, self.max_retries = urls, timeout, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self._busy = {u: 0 for u in urls}
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self.attempts = 0          # requests sent, retries included (tests read it)

    def _acquire(self, url: str | None) -> str:
        with self._lock:
            if url is None:
                start = next(self._turn) % len(self.urls)
                ring = self.urls[start:] + self.urls[:start]
                url = min(ring, key=self._busy.__getitem__)   # least busy; ties in turn
            self._busy[url] += 1
            self.attempts += 1
            return url

    def _send(self, url: str, method: str, path: str, body: dict | None) -> tuple[int, Any, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url + path, data=data, headers=self.headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.headers, e.read()

    def _stream(self, url: str, path: str, body: dict, stop_when: Callable[[str], bool]) -> tuple[int, Any, bytes]:
        """POST a ``"stream": true`` completion and read its server-sent events, accumulating the
        text; close the connection as soon as ``stop_when(text)`` holds (OpenAI-compatible servers
        abort a generation whose client has gone: llama.cpp's and vLLM's do). Returns what
        ``_send`` returns, the body being one non-streaming-shaped answer."""
        req = urllib.request.Request(url + path, data=json.dumps({**body, "stream": True}).encode(),
                                     headers={**self.headers, "Accept": "text/event-stream"}, method="POST")
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            with e:
                return e.code, e.headers, e.read()
        text, finish = "", None
        with resp:
            if resp.headers.get_content_type() != "text/event-stream":   # a server that does not stream
                return resp.status, resp.headers, resp.read()
            for line in resp:
                line = line.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                choice = (json.loads(data).get("choices") or [{}])[0]
                text += choice.get("text") or ""
                finish = choice.get("finish_reason") or finish
                if finish is None and stop_when(text):
                    finish = "client_stop"   # closing the response below aborts the generation
                    break
        if finish is None:
            # The stream ended without a finish reason: the server cut it short. llama-cpp-python's
            # server does so to a streamed completion whenever another request waits
            # (--interrupt_requests, on by default); a whole read is never interrupted.
            log.debug("a streamed completion from %s was interrupted; reading it whole", url)
            return self._send(url, "POST", path, body)
        return 200, resp.headers, json.dumps({"choices": [{"text": text, "finish_reason": finish}]}).encode()

    def request(self, method: str, path: str, body: dict | None = None, *, url: str | None = None,
                retry_5xx: bool = True, stop_when: Callable[[str], bool] | None = None) -> dict:
        """The decoded JSON answer. Retries 429, 5xx (unless ``retry_5xx`` is False), connection
        failures and timeouts; raises ``ServerError`` naming the URL and every failure. With
        ``stop_when``, the completion is streamed and cut once ``stop_when(text)`` holds."""
        failures: list[str] = []
        for attempt in range(self.max_retries + 1):
            target = self._acquire(url)
            wait: float | None = None
            try:
                status, headers, raw = (self._stream(target, path, body, stop_when) if stop_when and body is not None
                                        else self._send(target, method, path, body))
            except (OSError, http.client.HTTPException) as e:   # refused, reset, dropped, timed out
                reason = getattr(e, "reason", None) or e
                failures.append(f"{target}{path}: {type(reason).__name__}: {reason}")
            else:
                if status < 400:
                    try:
                        return json.loads(raw)
                    except ValueError:
                        failures.append(f"{target}{path}: HTTP {status} with a body that is not JSON")
                else:
                    message = _message(raw)
                    if status != 429 and (status < 500 or not retry_5xx):
                        raise ServerError(f"{target}{path} refused the request: HTTP {status}: {message}", status)
                    failures.append(f"{target}{path}: HTTP {status}: {message}")
                    wait = retry_after(headers.get("Retry-After"))
            finally:
                with self._lock:
                    self._busy[target] -= 1
            if attempt < self.max_retries:
                delay = min(self.max_backoff, self.backoff * 2 ** attempt)
                delay = delay / 2 + random.random() * delay / 2                 # jitter: spread the herd
                time.sleep(max(delay, wait or 0.0))
        raise ServerError(f"no usable answer for {method} {path} after {self.max_retries + 1} attempt(s) "
                          f"(max_retries={self.max_retries}); " + "; ".join(failures[-3:]))


def load_tokenizer(spec: str, *, field: str = "options.tokenizer") -> tuple[Tokenizer, str | None]:
    """A local tokenizer from a model spec, and the sha256 of what it was read from (None for a hub id)."""
    resolved = resolve_model(spec, field=field)
    if resolved.kind == "gguf":
        from .llamacpp import GGUFTokenizer

        return GGUFTokenizer.from_path(resolved.path), resolved.sha256
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolved.path), resolved.sha256
    except (OSError, ValueError) as e:
        raise InputError(f"could not load a tokenizer from '{spec}': {e}", field=field) from e


@BACKENDS.register("openai")
class OpenAIBackend(Backend):
    """A model served over HTTP; options and guarantees in the module docstring."""

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "float32",
                 base_url: str | list[str] | None = None, tokenizer: str | None = None, api_key: str | None = None,
                 concurrency: int = 4, timeout: float = 60.0, max_retries: int = 5, backoff: float = 0.5,
                 max_backoff: float = 30.0, prompt_format: str = "auto", extra_body: dict | None = None,
                 stream: bool = True, revision: str | None = None, sha256: str | None = None,
                 **options: Any) -> None:
        if adapter:
            raise CapabilityError(f"the openai backend cannot load a LoRA adapter (adapter '{adapter}'): serve it "
                                  "from the server (e.g. vLLM --lora-modules) and name it as the model")
        if options:
            raise InputError(f"unknown openai backend option(s) {sorted(options)}; known: base_url, tokenizer, "
                             "api_key, concurrency, timeout, max_retries, backoff, max_backoff, prompt_format, "
                             "extra_body, stream, revision, sha256", field="options")
        if not base_url:
            raise InputError("the openai backend needs the server's URL, e.g. base_url = "
                             "\"http://localhost:8000/v1\"", field="options.base_url")
        if prompt_format not in PROMPT_FORMATS:
            raise InputError(f"prompt_format '{prompt_format}' is not one of {', '.join(PROMPT_FORMATS)}",
                             field="options.prompt_format")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InputError(f"concurrency must be a positive integer, got {concurrency!r}",
                             field="options.concurrency")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise InputError(f"max_retries must be an integer >= 0, got {max_retries!r}", field="options.max_retries")
        if revision is not None and (not isinstance(revision, str) or not revision.strip()):
            raise InputError(f"revision must be a non-empty string (a commit, tag or branch), got {revision!r}",
                             field="options.revision")
        if sha256 is not None and (not isinstance(sha256, str) or not SHA256.fullmatch(sha256.lower())):
            raise InputError(f"sha256 must be 64 hex digits (the weight file's sha256), got {sha256!r}",
                             field="options.sha256")
        self.revision, self.sha256 = revision, sha256.lower() if sha256 else None
        self.model, self.concurrency, self.stream = model, concurrency, stream
        urls = [normalize_url(u) for u in ([base_url] if isinstance(base_url, str) else base_url)]
        self.client = Client(list(dict.fromkeys(urls)), api_key=api_key or os.environ.get("OPENAI_API_KEY"),
                             timeout=float(timeout), max_retries=max_retries, backoff=float(backoff),
                             max_backoff=float(max_backoff))
        self.tokenizer_spec = tokenizer or model
        try:
            self._tok, self._tok_sha256 = load_tokenizer(self.tokenizer_spec)
        except InputError as e:
            if tokenizer:
                raise
            raise InputError(f"the local tokenizer is looked up by the served model name '{model}', which is not "
                             f"a local model ({e}); set options.tokenizer to a known model name, .gguf file, model "
                             "directory or hub id", field="options.tokenizer") from None
        self.served = self._served_model()
        self.sampling = {"temperature": 0.0, "top_p": 1.0, "n": 1, **DEFAULT_EXTRA_BODY, **(extra_body or {})}
        if prompt_format == "auto":
            prompt_format = "ids" if all(self._accepts_ids(u) for u in self.client.urls) else "text"
        self.prompt_format = prompt_format
        # Token ids of the output: the server's own where it returns them, else re-encoded text.
        self.output_ids = "server" if prompt_format == "ids" and self._returns_ids() else "reencoded"
        self._eos = set(getattr(self._tok, "eog_ids", ()) or ()) | (
            {self._tok.eos_token_id} if self._tok.eos_token_id is not None else set())
        self._can_score: bool | None = None
        self.retokenized_mismatches = 0
        has_template = bool(getattr(self._tok, "chat_template", None))
        self.capabilities = Capabilities(batched=True, token_ids_in=prompt_format == "ids", exact_scoring=False,
                                         adapters=False, chat_template=has_template, batch_invariant=True)

    # -- server discovery ---------------------------------------------------------------------
    def _served_model(self) -> dict:
        """The stable ``/v1/models`` fields of ``self.model``, the same at every URL."""
        entries = {}
        for url in self.client.urls:
            try:
                listing = self.client.request("GET", "/models", url=url)
            except ServerError as e:
                raise ServerError(f"no OpenAI-compatible server answered at {url} (GET {url}/models): {e}") from None
            data = listing.get("data") if isinstance(listing, dict) else None
            models = {m.get("id"): m for m in data or [] if isinstance(m, dict)}
            if self.model not in models:
                raise InputError(f"the server at {url} does not serve '{self.model}'; it serves "
                                 f"{sorted(map(str, models)) or 'nothing'}", field="model")
            entries[url] = {k: models[self.model][k] for k in MODEL_FIELDS if k in models[self.model]}
        if len({json.dumps(e, sort_keys=True) for e in entries.values()}) > 1:
            raise InputError(f"the servers in base_url serve different models named '{self.model}': {entries}",
                             field="options.base_url")
        return next(iter(entries.values()))

    def _probe_ids(self) -> list[int]:
        return self._tok.encode("Hello", add_special_tokens=True)

    def _accepts_ids(self, url: str) -> bool:
        """Whether the server at ``url`` takes a token-id prompt (one tiny request, no 5xx retries:
        llama-cpp-python answers a list of ints with HTTP 500)."""
        try:
            self.client.request("POST", "/completions", {"model": self.model, "prompt": self._probe_ids(),
                                                         "max_tokens": 1, "temperature": 0.0}, url=url, retry_5xx=False)
        except ServerError as e:
            if e.status is None:
                raise
            log.info("%s does not take token-id prompts (HTTP %s); sending text prompts", url, e.status)
            return False
        return True

    def _returns_ids(self) -> bool:
        """Whether the server returns output token ids when asked (vLLM's ``return_token_ids``)."""
        try:
            answer = self.client.request("POST", "/completions", {
                "model": self.model, "prompt": self._probe_ids(), "max_tokens": 1, "temperature": 0.0,
                "return_token_ids": True}, retry_5xx=False)
        except ServerError as e:
            if e.status is None:
                raise
            return False
        ids = (answer.get("choices") or [{}])[0].get("token_ids")
        return isinstance(ids, list) and all(isinstance(t, int) for t in ids)

    # -- Backend ----------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Tokenizer:
        return self._tok

    def render_chat(self, user_text: str) -> str:
        if not self.capabilities.chat_template:
            raise CapabilityError(f"the tokenizer '{self.tokenizer_spec}' has no chat template")
        if hasattr(self._tok, "render_chat"):
            return self._tok.render_chat(user_text)
        return self._tok.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)

    def _prompt(self, ids: Sequence[int]) -> list[int] | str:
        """What is sent as the prompt: the ids, or their text without a leading BOS."""
        ids = list(ids)
        if self.prompt_format == "ids":
            return ids
        bos = getattr(self._tok, "bos_token_id", None)
        text = self._tok.decode(ids[1:] if ids and ids[0] == bos else ids, skip_special_tokens=False)
        if self._tok.encode(text, add_special_tokens=True) != ids:
            self.retokenized_mismatches += 1
            (log.warning if self.retokenized_mismatches == 1 else log.debug)(
                "text prompt format: an input does not re-tokenize to the same ids (%d so far); the server "
                "sees an approximate prompt/prior boundary", self.retokenized_mismatches)
        return text

    def _stops(self, req: GenerationRequest, decoding: Decoding) -> Callable[[str], bool]:
        """Whether the shared stopping rule ends a row whose returned text so far is ``text``."""
        calls = itertools.count(1)

        def stop_when(text: str) -> bool:
            # Re-encoding the whole text at every streamed token is quadratic; a stop string is
            # seen at once, and the loop guard every LOOP_CHECK_EVERY chunks. Checking late is safe:
            # the row is cut where the rule first fires in whatever text has arrived.
            if next(calls) % LOOP_CHECK_EVERY and not any(st in text for st in decoding.stop):
                return False
            row = RowState.for_request(decoding, self._tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
            return any(row.push(t, self._eos) for t in self._tok.encode(text, add_special_tokens=False))
        return stop_when

    def _complete(self, prompt: list[int] | str, budget: int, stop_when: Callable[[str], bool] | None = None) -> dict:
        body = {**self.sampling, "model": self.model, "prompt": prompt, "max_tokens": budget, "stream": False}
        if self.output_ids == "server":
            body["return_token_ids"] = True
        # Streaming lets the row end where RowState ends it instead of at the server's budget; with
        # the server's own ids the answer is read whole (ids are not streamed by every server).
        streamed = stop_when if self.stream and self.output_ids != "server" else None
        choices = self.client.request("POST", "/completions", body, stop_when=streamed).get("choices") or []
        if not choices or not isinstance(choices[0], dict):
            raise ServerError(f"a completion came back without choices (model '{self.model}')")
        return choices[0]

    def _to_generation(self, req: GenerationRequest, choice: dict, decoding: Decoding) -> Generation:
        """The shared stopping rule over the returned tokens. Without server-side stop strings the
        server ends a row only at EOS ("stop") or its budget ("length"), both of which RowState
        also stops at; so when no token stops the row, the server's reason says why it ended."""
        if self.output_ids == "server":
            ids = list(choice.get("token_ids") or [])
        else:
            ids = self._tok.encode(choice.get("text") or "", add_special_tokens=False)
        row = RowState.for_request(decoding, self._tok, req.max_new_tokens, has_prior=bool(req.prior_ids))
        for tok in ids:
            reason = row.push(tok, self._eos)
            if reason:
                return Generation(row.new, reason)
        finish = choice.get("finish_reason")
        if finish == "client_stop":   # cut by the same rule on the text, which re-encodes differently
            raise ServerError("a streamed completion was cut by the stopping rule, which its re-encoded text "
                              "does not reproduce; set options.stream = false")
        if finish not in ("stop", "length"):
            raise ServerError(f"the server ended a completion with finish_reason={finish!r}")
        return Generation(row.new, "eos" if finish == "stop" else "length")

    def generate(self, requests: Sequence[GenerationRequest], decoding: Decoding,
                 on_done: OnDone | None = None) -> list[Generation]:
        """Up to ``concurrency`` requests in flight; tokenizer work stays in the calling thread."""
        refuse_hooks(self, requests)
        out: list[Generation | None] = [None] * len(requests)
        if not requests:
            return []
        prompts = [self._prompt(r.input_ids) for r in requests]
        error: BaseException | None = None
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
        try:
            futures: dict[Future, int] = {
                pool.submit(self._complete, prompts[i], r.max_new_tokens or decoding.max_new_tokens,
                            self._stops(r, decoding)): i
                for i, r in enumerate(requests)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    choice = fut.result()
                except CancelledError:
                    continue
                except Exception as e:   # stop sending; finish what is in flight, then raise
                    if error is None:
                        error = e
                        for other in futures:
                            other.cancel()
                    continue
                out[i] = self._to_generation(requests[i], choice, decoding)
                if on_done:
                    on_done(i, out[i])
        finally:   # normally everything is done here; after a failing on_done, drop what is queued
            pool.shutdown(wait=False, cancel_futures=True)
        if error is not None:
            raise error
        return out  # type: ignore[return-value]

    # -- scoring ----------------------------------------------------------------------------
    def score(self, prompt_ids: Sequence[int], answer_ids: Sequence[int], top_k: int = 10) -> ScoreResult:
        """Top-N approximation from ``echo`` + ``logprobs=top_k`` (one generated token, ignored):
        log p of each answer token is the server's; its rank is exact within the top ``top_k``
        and ``top_k + 1`` (a lower bound) below them; ``top_ids`` are read from "token_id:N" keys
        or by encoding a key that is one token (-1 otherwise)."""
        if not answer_ids:
            return ScoreResult([], [], [])
        ids = list(prompt_ids) + list(answer_ids)
        body = {**self.sampling, "model": self.model, "prompt": self._prompt(ids), "max_tokens": 1, "echo": True,
                "logprobs": top_k}
        try:
            answer = self.client.request("POST", "/completions", body, retry_5xx=bool(self._can_score))
        except ServerError as e:
            if e.status is None:
                raise
            raise CapabilityError(f"the server cannot score answers, it refused echo + logprobs: {e}; scoring "
                                  "needs a server that returns prompt log-probs (vLLM does; llama-cpp-python's "
                                  "server only with --logits_all true)") from None
        self._can_score = True
        lp = ((answer.get("choices") or [{}])[0].get("logprobs") or {})
        tokens, logps, tops = lp.get("tokens") or [], lp.get("token_logprobs") or [], lp.get("top_logprobs") or []
        # The echoed entries are the prompt's (a leading BOS may be left out) and then the generated one.
        n = len(answer_ids)
        if len(tokens) < n + 1 or len(logps) != len(tokens) or len(tops) != len(tokens):
            raise CapabilityError(f"the server's echo + logprobs answer has {len(tokens)} entries for "
                                  f"{len(ids)} tokens; scoring needs the prompt echoed token by token")
        lo, hi = len(tokens) - n - 1, len(tokens) - 1
        if self.prompt_format == "text":
            echoed = "".join(tokens[lo:hi])
            if echoed != self._tok.decode(list(answer_ids), skip_special_tokens=False):
                raise CapabilityError("with text prompts the server tokenized the answer differently; scoring "
                                      "needs token-id prompts (prompt_format = \"ids\")")
        logprobs, ranks, top_ids = [], [], []
        for pos in range(lo, hi):
            chosen, top = float(logps[pos]), tops[pos] or {}
            logprobs.append(chosen)
            ranks.append(min(top_k + 1, 1 + sum(v > chosen for v in top.values())))
            top_ids.append([self._piece_id(k) for k, _ in sorted(top.items(), key=lambda kv: -kv[1])][:top_k])
        return ScoreResult(logprobs, ranks, top_ids)

    def _piece_id(self, piece: str) -> int:
        if piece.startswith("token_id:"):
            return int(piece.split(":", 1)[1])
        ids = self._tok.encode(piece, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else -1

    def answer_logprobs(self, items: Sequence[tuple[Sequence[int], Sequence[int]]], *, batch_size: int = 8,
                        chunk: int = 256) -> Iterator[tuple[int, int, Any]]:
        raise CapabilityError(f"backend 'openai' cannot give full-vocabulary log-probs: an OpenAI-compatible server "
                              f"returns at most the top-N per position (model '{self.model}')")

    def signature(self) -> dict:
        """No URL, key or timing; ``served["id"]`` is the served model id; ``revision`` and ``sha256``
        are the user's word for the weights (None when not given: then results cannot be tied to
        exact weights)."""
        return {"backend": "openai", "model": self.model, "served": self.served, "revision": self.revision,
                "sha256": self.sha256, "tokenizer": self.tokenizer_spec,
                "tokenizer_sha256": self._tok_sha256, "tokenizer_fingerprint": tokenizer_fingerprint(self._tok),
                "prompt_format": self.prompt_format, "output_ids": self.output_ids, "sampling": self.sampling}

"""``pretty-align serve CONFIG``: a base model with prior strategies behind the OpenAI API.

The config is an experiment config (``[base]``, optional ``[reference]``, ``[[priors]]``, ``[task]``
for the source language and template, ``[decoding]``) plus a ``[serve]`` table
(``ServeSettings``). Each prior is a served model, ``<base name>+<prior>`` (``gemma3-270m+pseudo-k2``,
``gemma3-270m+none``); ``GET /v1/models`` lists them. A request's text (the ``prompt`` of
``/v1/completions``, the last user message of ``/v1/chat/completions``) is the source; the target
language is the request's ``target_lang`` field (``extra_body`` in the openai client) or a model
suffix ``@deu_Latn``, and must be one of ``[serve] targets``.

The ecosystem's prefill convention is honoured: a chat request whose last message is the
assistant's, with ``continue_final_message: true`` and ``add_generation_prompt: false``, carries
the caller's own prior; the server continues it instead of building one.

Requests are queued and a worker thread hands whatever is waiting (up to ``max_batch``) to the
backend in one ``generate`` call, where the backends batch continuously. Streaming uses a step
hook (backends with their own decode loop: ``hf``, ``llamacpp``): each step sends the text that
became final; a client that disconnects ends its row at the next step (the hook answers EOS), so
its batch slot frees at once. Other backends stream the whole answer as one chunk.

Who gets in: the server binds 127.0.0.1 unless told otherwise; with an API key (``--api-key`` or
the ``api_key_env`` variable) every request needs ``Authorization: Bearer <key>``, compared in
constant time. A request names only the models and targets the config declares, never a path.
Bodies over ``max_body_bytes`` get 413; ``max_tokens`` above the limit, an over-long prompt, a
malformed body get 400 with the reason; nothing a client sends can stop the server.
"""


import asyncio
import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .backends import Backend, load_backend
from .boundary import Prompt, answer_ids, render_output
from .errors import InputError, MissingDependencyError
from .experiment.answerer import PromptTooLong
from .experiment.config import ExperimentConfig, _Strict, _validate, composed
from .experiment.runner import Condition, Runner
from .languages import get_language
from .priors import PriorItem
from .tasks.base import Example

log = logging.getLogger(__name__)


class ServeSettings(_Strict):
    """``[serve]``: where to listen, which targets, and the limits on what a client may ask."""

    host: str = "127.0.0.1"                 # 0.0.0.0 exposes the server to the network: say so explicitly
    port: int = Field(8000, ge=1, le=65535)
    targets: list[str] = Field(min_length=1, max_length=204)   # FLORES-200 codes a request may ask for
    default_target: Optional[str] = None    # when a request names none (default: the only target, if one)
    name: Optional[str] = Field(None, pattern=r"^[\w.\-]+$")   # served base name (default: base.model's name)
    api_key_env: str = Field("PRETTY_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")
    max_tokens: int = Field(256, ge=1, le=8192)          # the most new tokens a request may ask for
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 2**20)
    max_prompt_tokens: int = Field(1024, ge=16, le=65536)   # longer prompts get 400
    max_batch: int = Field(16, ge=1, le=256)             # requests per backend call
    batch_wait_ms: float = Field(5.0, ge=0, le=1000)     # wait this long for company before a call

    @field_validator("targets")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for code in v:
            get_language(code, field="serve.targets")
        return list(dict.fromkeys(v))


def load_serve_config(path: str | Path,
                      overrides: dict[str, Any] | None = None) -> tuple[ExperimentConfig, ServeSettings]:
    """The experiment part (data sources replaced by the served requests) and ``[serve]``."""
    path = Path(path)
    raw = composed(path, overrides)
    serve_raw = raw.pop("serve", None)
    if not isinstance(serve_raw, dict):
        raise InputError("a serve config needs a [serve] table (at least targets = [...])", path=str(path),
                         field="serve")
    settings = _validate(ServeSettings, serve_raw, path)
    if settings.default_target and settings.default_target not in settings.targets:
        raise InputError(f"default_target {settings.default_target} is not among targets {settings.targets}",
                         path=str(path), field="serve.default_target")
    task = {k: v for k, v in (raw.get("task") or {}).items()
            if k not in {"flores", "split", "src_file", "ref_file", "hub", "data", "n", "offset", "texts"}}
    task.update(targets=settings.targets, texts=["(served requests)"], n=None,
                max_prompt_tokens=settings.max_prompt_tokens)
    raw.update(task=task, store=":memory:", name=raw.get("name", "serve"))
    raw.setdefault("config_dir", str(path.parent))
    cfg = _validate(ExperimentConfig, raw, path)
    if cfg.task.name != "translation":
        raise InputError(f"pretty-align serve serves the translation task; this config's task is '{cfg.task.name}'",
                         path=str(path), field="task.name")
    return cfg, settings


def slug(label: str) -> str:
    """A condition label as a model-name part: ``pseudo k=2`` -> ``pseudo-k2``."""
    return label.replace(" k=", "-k").replace(" ", "-").replace("=", "")


# -- requests -------------------------------------------------------------------------------------------
MAX_STOPS, MAX_STOP_CHARS = 4, 64   # OpenAI's limits on the ``stop`` field


def cut_at_stops(text: str, stops: Sequence[str], prefix: str = "") -> tuple[str, bool]:
    """``text`` before the first occurrence of any of ``stops`` (right-stripped), and whether one
    occurred. Only occurrences that begin after ``prefix`` (the caller's own start of the answer,
    when ``text`` begins with it) count: stop strings end generated text, as on OpenAI-style
    servers, never the caller's prefill."""
    start = len(prefix) if prefix and text.startswith(prefix) else 0
    found = [p for p in (text.find(x, start) for x in stops) if p != -1]
    return (text[:min(found)].rstrip(), True) if found else (text, False)


def without_stop_start(text: str, stops: Sequence[str]) -> str:
    """``text`` without its longest suffix that begins one of ``stops``: the next tokens may complete it."""
    for n in range(min(len(text), max(map(len, stops), default=1) - 1), 0, -1):
        if any(x.startswith(text[-n:]) for x in stops):
            return text[:-n]
    return text


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")   # clients send fields we do not use (user, seed...)

    model: str = Field(min_length=1, max_length=200)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stream: bool = False
    n: int = Field(1, ge=1, le=1)          # greedy decoding: one answer per request
    temperature: Optional[float] = Field(None, ge=0, le=2)   # accepted; decoding is greedy
    target_lang: Optional[str] = Field(None, max_length=16)
    stop: Optional[str | list[str]] = None   # OpenAI's: the answer ends before the first of these

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOPS or any(not 0 < len(x) <= MAX_STOP_CHARS for x in stops):
            raise ValueError(f"give at most {MAX_STOPS} stop strings of 1 to {MAX_STOP_CHARS} characters")
        return stops


class CompletionRequest(_Request):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one(cls, v: str | list[str]) -> str:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError("send one prompt per request (a list of exactly one string)")
            v = v[0]
        if not v.strip():
            raise ValueError("the prompt is empty")
        return v


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):   # content parts: the text ones
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1, max_length=256)
    continue_final_message: bool = False
    add_generation_prompt: bool = True


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


# -- the worker -----------------------------------------------------------------------------------------
@dataclass
class Job:
    """One request on its way through the worker."""

    cond: Condition
    example: Example
    prompt: Prompt
    max_tokens: int
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future
    own_prior: Optional[str] = None          # the caller's prefill (continue_final_message), as prior_ids
    stream: Optional[asyncio.Queue] = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    sent: str = ""                           # text already streamed
    prior_ids: list[int] = field(default_factory=list)
    stops: tuple[str, ...] = ()              # the client's stop strings
    prefix: str = ""                         # own_prior as it begins the answer's text (stops look after it)

    def final(self, ans: Any) -> tuple[str, str]:
        """The answer's text as the client gets it (cut at its stop strings) and the finish reason."""
        text, cut = cut_at_stops(ans.text, self.stops, self.prefix)
        return text, "stop" if cut else _finish(ans.stop_reason)

    def emit(self, item: Any) -> None:
        if self.stream is not None:
            self.loop.call_soon_threadsafe(self.stream.put_nowait, item)


class StreamHook:
    """Picks like the inner hook (or greedily); streams the part of the answer no later token can
    change (so the streamed text is the text a non-streamed request gets); ends the row (EOS) once
    the client has gone or the answer holds one of the client's stop strings."""

    def __init__(self, job: Job, tokenizer: Any, stops: tuple[str, ...], eos: int, inner: Any = None) -> None:
        self.job, self.tok, self.stops, self.eos, self.inner = job, tokenizer, stops, eos, inner
        self.task = job.cond.answerer.task

    def pick(self, logits: Any, new: list[int]) -> int:
        job = self.job
        if job.cancelled.is_set():
            return self.eos
        if new:
            raw = render_output(self.tok, job.prompt, job.prior_ids, new, self.stops)
            if job.stops and cut_at_stops(self.task.clean_answer(raw, job.example), job.stops, job.prefix)[1]:
                return self.eos   # the client's stop string: the answer ends before it
            if job.stream is not None:
                self._emit(raw)
        return int(self.inner.pick(logits, new) if self.inner is not None else logits.argmax())

    def _emit(self, raw: str) -> None:
        job = self.job
        safe = self.task.streamable(without_stop_start(raw, self.stops), job.example, one_line="\n" in self.stops)
        safe = without_stop_start(cut_at_stops(safe, job.stops, job.prefix)[0], job.stops).rstrip()
        if safe.startswith(job.sent) and len(safe) > len(job.sent):
            job.emit(safe[len(job.sent):])
            job.sent = safe

    def finish(self, n_new: int) -> dict:
        return self.inner.finish(n_new) if self.inner is not None else {}


class Worker:
    """Owns the models: takes queued jobs, builds their priors and generates them together."""

    def __init__(self, runner: Runner, settings: ServeSettings) -> None:
        self.runner, self.settings = runner, settings
        self.jobs: "queue.Queue[Job | None]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="pretty-align-serve", daemon=True)
        self.base = runner.base
        self.answerers = list(runner._answerers.values())
        for answerer in self.answerers:   # no generation cache (SQLite objects stay in their thread)
            answerer.store = None
        self.batches = 0      # backend calls made (requests per call = how well requests were batched)
        self.finished: "deque[tuple[str, int, str]]" = deque(maxlen=1000)   # (request id, new tokens, stop)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            time.sleep(self.settings.batch_wait_ms / 1000)
            batch = [first]
            while len(batch) < self.settings.max_batch:
                try:
                    nxt = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.jobs.put(None)
                    break
                batch.append(nxt)
            live = [j for j in batch if not j.cancelled.is_set()]
            for j in batch:
                if j.cancelled.is_set():
                    j.cond.answerer.forget(j.example)
                    self._fail(j, ApiError(499, "client closed the request"))
            try:
                if live:
                    self._run(live)
            except Exception as e:   # a bad batch fails its requests, never the server
                log.exception("batch failed")
                for j in live:
                    self._fail(j, e)

    def _fail(self, job: Job, error: Exception) -> None:
        def set_error() -> None:
            if not job.done.done():
                job.done.set_exception(error)
        job.loop.call_soon_threadsafe(set_error)
        job.emit(None)

    def _run(self, jobs: list[Job]) -> None:
        """Answer ``jobs``, each by its condition's model: the base model for a prior's condition,
        the reference model for the reference condition (one backend call per model)."""
        try:
            for answerer in dict.fromkeys(j.cond.answerer for j in jobs):
                self._answer(answerer, [j for j in jobs if j.cond.answerer is answerer])
        finally:   # each example is seen once: its prompts leave the answerers' caches
            for j in jobs:
                for answerer in self.answerers:
                    answerer.forget(j.example)

    def _answer(self, answerer: Any, jobs: list[Job]) -> None:
        self.batches += 1
        tok = answerer.tokenizer
        inner: list[Any] = [None] * len(jobs)
        for cond in dict.fromkeys(j.cond for j in jobs):
            mine = [i for i, j in enumerate(jobs) if j.cond is cond and j.own_prior is None and cond.prior is not None]
            if not mine:
                continue
            built = cond.prior.build([PriorItem(jobs[i].example, jobs[i].prompt) for i in mine], tok)
            for i, res in zip(mine, built):
                jobs[i].prior_ids, inner[i] = list(res.ids), res.hook
        hooks: list[Any] = list(inner)
        if answerer.backend.capabilities.step_hook:
            eos = sorted(answerer.backend.eos_ids())
            stop_id = eos[0] if eos else (tok.eos_token_id or 0)
            hooks = [StreamHook(j, tok, answerer.decoding.stop, stop_id, h) if j.stream is not None or j.stops
                     else h for j, h in zip(jobs, inner)]

        answered_rows: set[int] = set()

        def answered(i: int, ans: Any) -> None:
            job = jobs[i]
            answered_rows.add(i)
            if hooks[i] is not None:
                hooks[i].finish(len(ans.new_ids))
            self.finished.append((job.example.id, len(ans.new_ids), ans.stop_reason))
            job.loop.call_soon_threadsafe(lambda: job.done.done() or job.done.set_result(ans))

        try:
            answerer.answer([j.example for j in jobs], [j.prior_ids for j in jobs], on_answer=answered, hooks=hooks,
                            budgets=[j.max_tokens for j in jobs])
        except InputError:
            # One request's own input (a prefill that does not fit the model's context, say) fails the
            # backend call; the others in it must not fail with it: each unanswered one goes alone.
            if len(jobs) == 1:
                raise
            for i, job in enumerate(jobs):
                if i not in answered_rows:
                    try:
                        self._answer(answerer, [job])
                    except InputError as e:
                        self._fail(job, e)


# -- the app --------------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 (counted as it arrives, so a
    chunked body without Content-Length cannot slip past)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_error(send, 413, f"request body over the server's limit of {self.limit} bytes")
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"request body over the server's limit of {self.limit} bytes")
            return message

        try:
            await self.app(scope, counted, send)
        except ApiError as e:
            await _send_error(send, e.status, e.message)


async def _send_error(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _require(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise MissingDependencyError("pretty-align serve", "fastapi uvicorn") from None


def create_app(cfg: ExperimentConfig, settings: ServeSettings, *, api_key: str | None = None,
               backend_factory: Callable[..., Backend] = load_backend):
    """The FastAPI app (models loaded now; the worker starts with the app)."""
    _require("fastapi")
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse

    runner = Runner(cfg, backend_factory=backend_factory)
    worker = Worker(runner, settings)
    base_name = settings.name or Path(cfg.base.model).stem or "base"
    models = {f"{base_name}+{slug(c.label)}": c for c in runner.conditions}
    key = api_key.encode() if api_key else None

    @asynccontextmanager
    async def lifespan(app: Any):
        worker.start()
        yield
        worker.stop()

    app = FastAPI(title="pretty-align", lifespan=lifespan)
    app.state.worker, app.state.models = worker, models

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return JSONResponse({"error": {"message": e.message, "type": "invalid_request_error", "param": e.param,
                                       "code": e.code}}, status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse({"error": {"message": f"{where}: {first.get('msg')}" if where else first.get("msg"),
                                       "type": "invalid_request_error", "param": where or None, "code": None}},
                            status_code=400)

    def authorized(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:].encode() if given.lower().startswith("bearer ") else b""
        if not hmac.compare_digest(token, key):
            raise ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def list_models():
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "pretty-align"}
                                           for m in models]}

    def job_for(req: _Request, text: str, own_prior: str | None, stream: bool) -> Job:
        name, _, suffix = req.model.partition("@")
        cond = models.get(name)
        if cond is None:
            raise ApiError(404, f"model '{name}' is not served here; models: {', '.join(models)}", param="model",
                           code="model_not_found")
        code = req.target_lang or suffix or settings.default_target or (
            settings.targets[0] if len(settings.targets) == 1 else None)
        if code is None:
            raise ApiError(400, f"name the target language: target_lang (one of {', '.join(settings.targets)})",
                           param="target_lang")
        if code not in settings.targets:
            raise ApiError(400, f"target language '{code}' is not served; targets: {', '.join(settings.targets)}",
                           param="target_lang")
        cap = req.max_completion_tokens or req.max_tokens or settings.max_tokens
        if cap > settings.max_tokens:
            raise ApiError(400, f"max_tokens {cap} is over the server's limit of {settings.max_tokens}",
                           param="max_tokens")
        tgt = get_language(code)
        example = Example(f"req-{uuid.uuid4().hex}", text, None, runner.task.source_language(tgt), tgt)
        try:   # cached for the worker, which forgets it; an over-long prompt is refused, never cut
            prompt, _, _ = cond.answerer.prompt(example, truncate=False)
        except PromptTooLong:
            raise ApiError(400, f"the prompt is over the server's limit of {settings.max_prompt_tokens} tokens",
                           param="prompt", code="context_length_exceeded") from None
        # the caller's prefix as the answer's first ids, once, here: the limit below needs its length
        own_ids = answer_ids(cond.answerer.tokenizer, prompt, own_prior) if own_prior is not None else []
        if len(prompt.ids) + len(own_ids) > settings.max_prompt_tokens:
            raise ApiError(400, f"the prompt and the assistant prefix are over the server's limit of "
                           f"{settings.max_prompt_tokens} tokens", param="messages", code="context_length_exceeded")
        # the prefix as the answer's text begins with it (cleaned like the answer: a target label goes)
        prefix = (cond.answerer.task.clean_answer(render_output(cond.answerer.tokenizer, prompt, own_ids, []), example)
                  if own_ids else "")
        loop = asyncio.get_running_loop()
        return Job(cond, example, prompt, cap, loop, loop.create_future(), own_prior,
                   asyncio.Queue() if stream else None, prior_ids=own_ids, stops=tuple(req.stop or ()), prefix=prefix)

    async def respond(job: Job, request: Request, kind: str, model: str):
        worker.jobs.put(job)
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if job.stream is None:
            try:
                ans = await job.done
            except asyncio.CancelledError:   # the client went away: its row ends at the next step
                job.cancelled.set()
                raise
            except Exception as e:
                raise as_api_error(e) from None
            return JSONResponse(_body(kind, rid, created, model, ans, job))
        return StreamingResponse(_events(job, request, kind, rid, created, model), media_type="text/event-stream")

    async def _events(job: Job, request: Request, kind: str, rid: str, created: int, model: str):
        def chunk(delta: str | None, finish: str | None = None, first: bool = False) -> str:
            if kind == "chat":
                d: dict = {"role": "assistant", "content": ""} if first else ({"content": delta} if delta else {})
                choice = {"index": 0, "delta": d, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": delta or "", "finish_reason": finish}
                obj = "text_completion"
            return "data: " + json.dumps({"id": rid, "object": obj, "created": created, "model": model,
                                          "choices": [choice]}, ensure_ascii=False) + "\n\n"

        try:
            if kind == "chat":
                yield chunk(None, first=True)
            while True:
                getter = asyncio.ensure_future(job.stream.get())   # type: ignore[union-attr]
                done, _ = await asyncio.wait({getter, job.done}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    piece = getter.result()
                    if piece:
                        yield chunk(piece)
                    continue
                getter.cancel()
                break
            try:
                ans = job.done.result()
            except Exception as e:
                yield "data: " + json.dumps({"error": {"message": as_api_error(e).message}}) + "\n\n"
                return
            while not job.stream.empty():   # type: ignore[union-attr]
                piece = job.stream.get_nowait()   # type: ignore[union-attr]
                if piece:
                    yield chunk(piece)
            text, finish = job.final(ans)
            if not text.startswith(job.sent):   # cannot happen (only certain text is streamed): say so
                log.warning("request %s: streamed %r, but the answer is %r", job.example.id, job.sent, text)
            rest = text[len(job.sent):] if text.startswith(job.sent) else ""
            if rest:
                yield chunk(rest)
            yield chunk(None, finish)
            yield "data: [DONE]\n\n"
        finally:   # a client that disconnects mid-stream frees its slot at the next step
            job.cancelled.set()

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(req: CompletionRequest, request: Request):
        job = job_for(req, req.prompt, None, req.stream)   # type: ignore[arg-type]
        return await respond(job, request, "text", req.model)

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat(req: ChatRequest, request: Request):
        msgs = req.messages
        own = None
        if req.continue_final_message:
            if req.add_generation_prompt or msgs[-1].role != "assistant":
                raise ApiError(400, "continue_final_message needs add_generation_prompt: false and a final "
                               "assistant message (the prefix to continue)", param="continue_final_message")
            own, msgs = msgs[-1].text(), msgs[:-1]
        users = [m for m in msgs if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise ApiError(400, "the request needs a user message with the text to translate", param="messages")
        job = job_for(req, users[-1].text(), own, req.stream)
        return await respond(job, request, "chat", req.model)

    return BodyLimit(app, settings.max_body_bytes), app


def as_api_error(e: Exception) -> ApiError:
    """What a client is told of a failed request: its own fault (400) or the server's (500)."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, InputError):
        return ApiError(400, str(e))
    # The message can hold paths or a model's internals: the server's log has it (the batch's traceback)
    return ApiError(500, f"generation failed ({type(e).__name__}); the server's log has the details")


def _finish(stop_reason: str) -> str:
    return "length" if stop_reason == "length" else "stop"


def _body(kind: str, rid: str, created: int, model: str, ans: Any, job: Job) -> dict:
    usage = {"prompt_tokens": len(job.prompt.ids), "completion_tokens": len(ans.new_ids),
             "total_tokens": len(job.prompt.ids) + len(ans.new_ids)}
    extra = {"target_lang": job.example.tgt.code, "condition": job.cond.label, "prior_ids": ans.prior_ids,
             "decoding": "greedy"}
    text, finish = job.final(ans)
    if kind == "chat":
        choice: dict = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        return {"id": rid, "object": "chat.completion", "created": created, "model": model, "choices": [choice],
                "usage": usage, "pretty_align": extra}
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
            "usage": usage, "pretty_align": extra}


def serve(config: str | Path, *, host: str | None = None, port: int | None = None, api_key: str | None = None,
          overrides: dict[str, Any] | None = None) -> None:
    """Load ``config`` and serve it until interrupted."""
    _require("uvicorn")
    import uvicorn

    cfg, settings = load_serve_config(config, overrides)
    key = api_key or os.environ.get(settings.api_key_env) or None
    asgi, _ = create_app(cfg, settings, api_key=key)
    bind = host or settings.host
    if bind not in {"127.0.0.1", "localhost", "::1"} and not key:
        log.warning("serving on %s without an API key: anyone who can reach this address can use the models", bind)
    uvicorn.run(asgi, host=bind, port=port or settings.port, log_level="info")


__all__ = ["ServeSettings", "create_app", "load_serve_config", "serve", "slug"]

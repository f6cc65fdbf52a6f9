"""The OpenAI-compatible HTTP front of the runtime (FastAPI on uvicorn, in the gRPC server's
event loop), sharing the engine through the scheduler's submit / handle / ready only.

    POST /v1/chat/completions   chat, SSE streaming, tools + tool_choice -> tool_calls
    POST /v1/completions        raw prompt
    GET  /v1/models             the served model
    GET  /health                200 once the model is loaded, 503 before (no token needed)

Errors are OpenAI's error object: 400 naming the field (`param`), 401, 404 (another model),
413 (a body over 4 MB), 429 (the queue is full), 503 (not ready). A client that disconnects
stops its generation at the next token. Requests are traced (`chat {model}`, W3C traceparent
from the headers) and counted in the same metrics as gRPC's.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import propagate, trace

from inloop.services.common import metrics
from inloop.services.common.logging import get_logger
from inloop.services.common.security import bearer_token
from inloop.services.common.telemetry import tracer
from inloop.services.contract.errors import InvalidRequest
from inloop.services.contract.generation import GenerateRequest
from inloop.services.runtime.service import openai_convert as convert
from inloop.services.runtime.service.openai_api import ChatCompletionRequest, CompletionRequest
from inloop.services.runtime.service.scheduler import NotReady, QueueFull, RequestExpired, Scheduler

log = get_logger(__name__)
MAX_BODY_BYTES = 4 << 20
# uvicorn cancels a request still open at its graceful-shutdown timeout and closes the socket
# mid-stream. Our drain (services/common/drain.py) ends SSE streams with an error event at the
# grace's end minus a small margin; on a loaded event loop (a fast engine posting thousands of
# tokens) that event can take longer than the margin to go out, so uvicorn's cut waits longer.
CUT_AFTER_GRACE_S = 2.0
_STATUS = {InvalidRequest: 400, QueueFull: 429, NotReady: 503, RequestExpired: 504}
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable", 504: "timeout",
          500: "internal_error"}


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    """OpenAI's error object."""
    return JSONResponse({"error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"),
                                   "param": param, "code": status}}, status_code=status)


class BodyLimit:
    """413 for a request body over `limit` bytes (by its Content-Length, or as it arrives)."""

    class TooLarge(Exception):
        pass

    def __init__(self, app, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyLimit.TooLarge()
            return message
        try:
            await self.app(scope, counted, send)
        except BodyLimit.TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        await error(413, f"the request body is over {self.limit} bytes")(scope, receive, send)


def make_app(scheduler: Scheduler, served_name: str = "", token: str | None = None, drain=None) -> FastAPI:
    """`served_name`: the model name clients use (default: the loaded model's, its directory's
    name); a request naming another model gets 404. `drain` (services/common/drain.py, the gRPC
    server's): on SIGTERM, a request still open at the grace's end ends with 503 / an SSE error
    event instead of a cut connection."""
    app = FastAPI(title="inloop runtime", docs_url=None, redoc_url=None, openapi_url=None)

    def model_name() -> str:
        if served_name:
            return served_name
        try:
            return str(scheduler.engine.info.get("name", "model"))
        except NotReady:
            return "model"

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if token and request.url.path != "/health":
            given = request.headers.get("authorization")
            if given is None or bearer_token(given) != token.encode():
                return error(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def bad_shape(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(400, f"{param + ': ' if param else ''}{first.get('msg')}", param)

    @app.get("/health")
    async def health():
        ready = scheduler.ready
        if ready.done() and ready.exception() is None:
            return {"status": "ok"}
        return error(503, "the model is still loading" if not ready.done() else "the model failed to load")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name(), "object": "model", "created": 0,
                                             "owned_by": "inloop"}]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        return await _serve(request, body, "chat")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await _serve(request, body, "completion")

    async def _serve(request: Request, body, kind: str):
        model = model_name()
        if body.model and body.model != model:
            return error(404, f"The model `{body.model}` does not exist; this server serves `{model}`.", "model")
        context = propagate.extract(dict(request.headers))
        attributes = {"gen_ai.operation.name": "chat" if kind == "chat" else "text_completion",
                      "gen_ai.provider.name": "inloop", "gen_ai.request.model": model, "inloop.api": "openai"}
        with tracer().start_as_current_span(f"chat {model}", context=context, kind=trace.SpanKind.SERVER,
                                            attributes=attributes) as span:
            request_id = convert.new_id("req")
            try:
                req = convert.chat_request(body, request_id) if kind == "chat" else \
                    convert.completion_request(body, request_id)
                events: asyncio.Queue = asyncio.Queue()
                handle = scheduler.submit(req, on_token=events.put_nowait)
            except (InvalidRequest, QueueFull, NotReady) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                return _failure(exc)
            if body.stream:
                return StreamingResponse(_stream(body, kind, model, req, handle, events, span),
                                         media_type="text/event-stream")
            return await _whole(request, body, kind, model, req, handle, events, span)

    async def _whole(request, body, kind, model, req: GenerateRequest, handle, events: asyncio.Queue, span):
        waiting = asyncio.ensure_future(handle.wait())
        try:
            while not waiting.done():  # a client that hangs up stops its generation
                await asyncio.wait({waiting}, timeout=0.25)
                if not waiting.done() and drain is not None and drain.expired:
                    return error(503, drain.message())  # shutting down (finally stops the generation)
                if not waiting.done() and await request.is_disconnected():
                    handle.cancel()
            result = waiting.result()
        except (RequestExpired, InvalidRequest) as exc:
            return _failure(exc)
        finally:
            handle.cancel()
        _observe(span, model, handle, result)
        texts = [e.text for e in _drain(events)]
        if kind == "chat":
            return convert.chat_response(body, result, model, texts)
        return convert.completion_response(body, result, model)

    async def _stream(body, kind, model, req: GenerateRequest, handle, events: asyncio.Queue, span):
        cid = convert.new_id("chatcmpl" if kind == "chat" else "cmpl")
        hold = convert.ToolCallHold(kind == "chat" and bool(req.tools) and req.tool_choice != "none")
        waiting = asyncio.ensure_future(handle.wait())
        # Shutting down: a stream still open at the grace's end gets an error event, not a cut.
        stopping = asyncio.ensure_future(drain.expired_event.wait()) if drain is not None else None
        try:
            if kind == "chat":
                yield _sse(convert.chunk(kind, cid, model, {"role": "assistant", "content": ""}))
            while not (waiting.done() and events.empty()):
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait({getter, waiting, *([stopping] if stopping else [])},
                                   return_when=asyncio.FIRST_COMPLETED)
                # The drain comes before any token still queued: while the engine outpaces this
                # loop the queue is never empty, and a stream that served it first never ended.
                if stopping is not None and stopping.done() and not waiting.done():
                    getter.cancel()
                    handle.cancel()
                    yield _sse({"error": json.loads(error(503, drain.message()).body)["error"]})
                    return
                if not getter.done():
                    getter.cancel()
                    continue
                event = getter.result()
                if event.reasoning:  # a thinking model's thought, apart from the answer (as vLLM)
                    yield _sse(convert.chunk(kind, cid, model, {"reasoning_content": event.reasoning}))
                text = hold.feed(event)
                if text:
                    yield _sse(convert.chunk(kind, cid, model, {"content": text}, text=text))
            result = waiting.result()
        except asyncio.CancelledError:  # the client went away: stop at the next token
            handle.cancel()
            raise
        except (RequestExpired, InvalidRequest) as exc:
            yield _sse({"error": json.loads(_failure(exc).body)["error"]})
            return
        finally:
            handle.cancel()
            if stopping is not None:
                stopping.cancel()
        _observe(span, model, handle, result)
        tail = hold.rest()
        if tail:
            yield _sse(convert.chunk(kind, cid, model, {"content": tail}, text=tail))
        finish = result.finish_reason
        if hold.calling:
            message, called = convert.reply_message(result.text, req.tools)
            if called:
                finish = "tool_calls"
                calls = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
                yield _sse(convert.chunk(kind, cid, model, {"tool_calls": calls}))
            else:  # not a well-formed call after all: what was held goes out as text
                yield _sse(convert.chunk(kind, cid, model, {"content": result.text[hold.sent:]},
                                         text=result.text[hold.sent:]))
        yield _sse(convert.chunk(kind, cid, model, finish=finish))
        if body.stream_options and body.stream_options.include_usage:
            yield _sse({"id": cid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                        "created": int(time.time()), "model": model, "choices": [], "usage": convert.usage(result)})
        yield "data: [DONE]\n\n"

    def _observe(span, model, handle, result) -> None:
        metrics.observe_generation(model, handle.submitted_at, result)
        span.set_attribute("gen_ai.usage.input_tokens", result.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", result.completion_tokens)
        span.set_attribute("gen_ai.response.finish_reasons", [result.finish_reason])

    app.add_middleware(BodyLimit)
    return app


def _failure(exc: BaseException) -> JSONResponse:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    if isinstance(exc, InvalidRequest):
        return error(400, f"{convert.param_of(exc.field)}: {exc.message}", convert.param_of(exc.field))
    if status == 500:
        log.error("http_request_failed", exc_info=exc)
        return error(500, "internal error; the runtime's log has the details")
    return error(status, str(exc))


def _drain(queue: asyncio.Queue) -> list:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


# ---- serving -------------------------------------------------------------------------------
class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the gRPC side owns SIGTERM and stops us (should_exit)
        yield


async def start_http(app: FastAPI, host: str, port: int, tls: tuple[str, str, str] | None = None,
                     grace_s: float = 5.0):
    """Serve `app` in this event loop; returns (server, bound port). With the service's TLS
    files it is HTTPS; client certificates are optional (SDKs do not send them). On shutdown,
    open requests get `grace_s` (the service's --grace-s): the drain ends them typed just
    before it runs out; uvicorn's own cut comes CUT_AFTER_GRACE_S later, only for a handler
    that ignored the drain."""
    kw = {}
    if tls is not None:
        cert, key, ca = tls
        kw = {"ssl_certfile": cert, "ssl_keyfile": key, "ssl_ca_certs": ca, "ssl_cert_reqs": ssl.CERT_OPTIONAL}
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
                            timeout_graceful_shutdown=grace_s + CUT_AFTER_GRACE_S, **kw)
    server = _Server(config)
    server.task = asyncio.ensure_future(server.serve())
    while not server.started:
        if server.task.done():
            server.task.result()  # raises why it could not start (the port is taken, ...)
            raise OSError(f"the HTTP server on {host}:{port} stopped at start")
        await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return server, bound


def begin_http_drain(server) -> None:
    """At SIGTERM: stop accepting, let open requests run (uvicorn waits up to its grace)."""
    server.should_exit = True


async def stop_http(server) -> None:
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.task, 10)

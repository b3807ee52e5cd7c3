"""The HTTP/JSON face of TaskService and ScheduleService, on aiohttp, on the
gRPC server's loop.

Every route calls the same TaskCore or ScheduleCore as the gRPC servicers:
the same validation, limits, tenancy and metrics, no loopback gRPC hop. Routes follow
AIP-127 (custom methods after a colon); bodies are the contract's messages
as grpcurl prints them; errors are google.rpc.Status JSON. See docs/http.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf.message import Message

from conveyor.v1 import schedule_service_pb2 as spb
from conveyor.v1 import task_service_pb2 as pb
from conveyor_server._core import STORE_ERRORS, TaskCore, store_error
from conveyor_server._dashboard import add_dashboard, is_dashboard_path
from conveyor_server._errors import ServiceError, invalid_argument
from conveyor_server._http_auth import EXPIRED, MISSING, SESSION_COOKIE, HttpAuth, Session
from conveyor_server._http_json import (
    dumps,
    http_status,
    integer_parameter,
    list_request,
    list_schedules_request,
    logs_request,
    parse_body,
    status_json,
    to_json,
    update_type_request,
    watch_tasks_request,
)
from conveyor_server._observer import TaskObserver
from conveyor_server._schedules import ScheduleCore
from conveyor_server._stats import Throughput, task_stats
from conveyor_server._tracing import TRACEPARENT, submit_traceparent

logger = logging.getLogger(__name__)

# A comment line this often keeps proxies from closing a quiet event
# stream, and finds a client that went away.
KEEPALIVE_SECONDS = 15.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROUTE = web.RequestKey("route", str)
_TENANT = web.RequestKey("tenant", str)
_STREAM = web.RequestKey("stream", bool)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=dumps(value), status=status, content_type="application/json")


def _message(message: Message) -> web.Response:
    return _json(to_json(message))


def _error(error: ServiceError) -> web.Response:
    response = _json(status_json(error), http_status(error.code))
    if error.code is grpc.StatusCode.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="conveyor"'
    return response


async def _body(request: web.Request, message: Message) -> Any:
    return parse_body(await _body_text(request), message)


async def _body_text(request: web.Request) -> str:
    # Only JSON: a form on another site cannot send it without CORS, which
    # this API does not grant.
    if request.content_type != "application/json":
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"send the body as JSON with 'Content-Type: application/json', "
            f"not {request.content_type!r}",
        )
    return await request.text()


def _set_cookie(response: web.StreamResponse, session: Session, secure: bool) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session.cookie,
        max_age=max(0, int(session.expire_time - time.time())),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


class HttpApi:
    """The routes and their server; `start` binds, `stop` closes."""

    def __init__(
        self,
        core: TaskCore,
        schedules: ScheduleCore,
        auth: HttpAuth,
        throughput: Throughput,
        observer: TaskObserver,
        *,
        max_body_bytes: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._core = core
        self._schedules = schedules
        self._auth = auth
        self._throughput = throughput
        self._observer = observer
        self._ssl = ssl_context
        self._max_body_bytes = max_body_bytes
        self.app = web.Application(middlewares=[self._middleware], client_max_size=max_body_bytes)
        add = self.app.router.add_route
        add("POST", "/v1/tasks", self._submit)
        add("POST", "/v1/tasks:batchSubmit", self._batch_submit)
        add("POST", "/v1/tasks:batchCancel", self._batch_cancel)
        add("POST", "/v1/tasks:batchRetry", self._batch_retry)
        add("GET", "/v1/tasks", self._list)
        add("GET", "/v1/tasks:watch", self._watch_tasks)
        add("GET", "/v1/tasks/{name}", self._task_get)
        add("POST", "/v1/tasks/{name}", self._task_post)
        add("GET", "/v1/tasks/{name}/logs", self._task_logs)
        add("GET", "/v1/taskTypes", self._task_types)
        add("PATCH", "/v1/taskTypes/{name}", self._task_type_patch)
        add("POST", "/v1/taskTypes/{name}", self._task_type_post)
        add("GET", "/v1/workers", self._workers)
        add("GET", "/v1/stats", self._stats)
        self._add_schedule_routes()
        add("GET", "/v1/session", self._session_get)
        add("POST", "/v1/session", self._login)
        add("DELETE", "/v1/session", self._logout)
        add_dashboard(self.app)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        # Handlers are cancelled when their client goes away, so an idle
        # event stream frees its watch slot at once.
        runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, host.strip("[]") or None, port, ssl_context=self._ssl)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(
                f"cannot serve the HTTP API on {host}:{port}: {exc.strerror or exc}; stop "
                "what holds the port, give another --http-port (CONVEYOR_HTTP_PORT), or -1 "
                "for none"
            ) from exc
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # The one place where refusals become Status JSON, and where
        # requests are counted and timed.
        started = time.perf_counter()
        # Handlers name their route; a request refused before that is
        # counted under the path pattern it matched.
        resource = request.match_info.route.resource
        request[_ROUTE] = (
            "unmatched" if resource is None else f"{request.method} {resource.canonical}"
        )
        request[_STREAM] = False
        status = 500
        try:
            try:
                # The page's files are open; the API they call is not.
                if request.path != "/v1/session" and not is_dashboard_path(request.path):
                    request[_TENANT] = self._auth.tenant(
                        request.method, request.headers, request.cookies
                    )
                response = await handler(request)
            except web.HTTPException as exc:
                response = self._http_error(request, exc)
            except STORE_ERRORS as exc:
                response = _error(store_error(exc))
            except ServiceError as exc:
                response = _error(exc)
            status = response.status
            return response
        except asyncio.CancelledError:
            status = 499  # the client went away
            raise
        finally:
            seconds = None if request[_STREAM] else time.perf_counter() - started
            self._observer.http_handled(request[_ROUTE], status, seconds)

    def _http_error(self, request: web.Request, exc: web.HTTPException) -> web.Response:
        """aiohttp's own refusals (no route, wrong method, body too large)
        as Status JSON."""
        where = f"{request.method} {request.path}"
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(exc.allowed_methods))
            code, message = grpc.StatusCode.UNIMPLEMENTED, f"{where}: use {allowed}"
        elif isinstance(exc, web.HTTPNotFound):
            code, message = grpc.StatusCode.NOT_FOUND, f"no route {where}; see docs/http.md"
        elif isinstance(exc, web.HTTPRequestEntityTooLarge):
            code = grpc.StatusCode.INVALID_ARGUMENT
            message = f"the body is larger than the {self._max_body_bytes} bytes accepted"
        else:
            code, message = grpc.StatusCode.UNKNOWN, exc.text or exc.reason
        response = _error(ServiceError(code, message))
        response.set_status(exc.status)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return response

    # -- the contract ---------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/tasks"
        body = await _body(request, pb.SubmitTaskRequest())
        traceparent = submit_traceparent(request.headers.get(TRACEPARENT))
        return _message(await self._core.submit(body, request[_TENANT], traceparent))

    async def _batch_submit(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/tasks:batchSubmit"
        body = await _body(request, pb.BatchSubmitTasksRequest())
        traceparent = submit_traceparent(request.headers.get(TRACEPARENT))
        return _message(await self._core.batch_submit(body, request[_TENANT], traceparent))

    async def _batch_cancel(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/tasks:batchCancel"
        body = await _body(request, pb.BatchCancelTasksRequest())
        return _message(await self._core.batch_cancel(body, request[_TENANT]))

    async def _batch_retry(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/tasks:batchRetry"
        body = await _body(request, pb.BatchRetryTasksRequest())
        return _message(await self._core.batch_retry(body, request[_TENANT]))

    async def _list(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/tasks"
        query = request.query
        multi = {name: query.getall(name) for name in query}
        message = list_request(dict(query), multi)
        return _message(await self._core.list(message, request[_TENANT]))

    async def _task_get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name.endswith(":watch"):
            request[_ROUTE] = "GET /v1/tasks/{id}:watch"
            return await self._watch(request, name.removesuffix(":watch"))
        request[_ROUTE] = "GET /v1/tasks/{id}"
        return _message(await self._core.get(pb.GetTaskRequest(id=name), request[_TENANT]))

    async def _task_logs(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/tasks/{id}/logs"
        query = request.query
        multi = {name: query.getall(name) for name in query}
        message = logs_request(request.match_info["name"], dict(query), multi)
        return _message(await self._core.logs.read(message, request[_TENANT]))

    async def _task_post(self, request: web.Request) -> web.StreamResponse:
        task_id, colon, verb = request.match_info["name"].rpartition(":")
        tenant = request[_TENANT]
        if colon and verb == "cancel":
            request[_ROUTE] = "POST /v1/tasks/{id}:cancel"
            return _message(await self._core.cancel(pb.CancelTaskRequest(id=task_id), tenant))
        if colon and verb == "retry":
            request[_ROUTE] = "POST /v1/tasks/{id}:retry"
            return _message(await self._core.retry(pb.RetryTaskRequest(id=task_id), tenant))
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"no route POST {request.path}: a task takes POST /v1/tasks/{{id}}:cancel or :retry",
        )

    async def _watch_tasks(self, request: web.Request) -> web.StreamResponse:
        """WatchTasks as Server-Sent Events: one event per change, its id the
        feed's cursor, so a reconnect with Last-Event-ID continues after it
        (or gets a reset marker when it cannot)."""
        request[_ROUTE] = "GET /v1/tasks:watch"
        query = request.query
        watch = watch_tasks_request(dict(query), {name: query.getall(name) for name in query})
        last = request.headers.get("Last-Event-ID")
        if last:
            watch.cursor = last
        request[_STREAM] = True
        response = web.StreamResponse(headers=_SSE_HEADERS)

        async def ready(cursor: str) -> None:
            # Headers go once the feed is followed: a client that saw them
            # misses no change made after, and can resume from this cursor.
            response.headers["Conveyor-Cursor"] = cursor
            await response.prepare(request)

        changes = self._core.watch_tasks(watch, request[_TENANT], ready=ready)
        async with contextlib.aclosing(changes):
            # Refusals (a bad cursor, no room) come before `ready`, as JSON.
            await _pump(response, None, changes, lambda m: (m.cursor, m))
        return response

    async def _watch(self, request: web.Request, task_id: str) -> web.StreamResponse:
        """WatchTask as Server-Sent Events: one event per snapshot, its id the
        task's version, so a reconnect with Last-Event-ID resumes after it."""
        tenant = request[_TENANT]
        since = request.headers.get("Last-Event-ID") or request.query.get("since_version", "0")
        watch = pb.WatchTaskRequest(
            id=task_id, since_version=integer_parameter("since_version", since)
        )
        self._core.admit_watch(watch, tenant)
        request[_STREAM] = True
        async with contextlib.aclosing(self._core.watch(watch, tenant)) as snapshots:
            try:
                first = await anext(snapshots)
            except StopAsyncIteration:
                # Resumed after the terminal snapshot: nothing more will come.
                # 204 tells a browser's EventSource not to reconnect.
                return web.Response(status=204)
            response = web.StreamResponse(headers=_SSE_HEADERS)
            await response.prepare(request)
            await _pump(response, first, snapshots, lambda m: (str(m.task.version), m))
            return response

    async def _task_types(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/taskTypes"
        return _message(await self._core.task_types())

    async def _task_type_patch(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "PATCH /v1/taskTypes/{name}"
        name = request.match_info["name"]
        text = await _body_text(request)
        return _message(
            await self._core.update_task_type(update_type_request(text, name), request[_TENANT])
        )

    async def _task_type_post(self, request: web.Request) -> web.StreamResponse:
        name, colon, verb = request.match_info["name"].rpartition(":")
        if colon and verb == "pause":
            request[_ROUTE] = "POST /v1/taskTypes/{name}:pause"
            return _message(
                await self._core.pause_task_type(
                    pb.PauseTaskTypeRequest(name=name), request[_TENANT]
                )
            )
        if colon and verb == "resume":
            request[_ROUTE] = "POST /v1/taskTypes/{name}:resume"
            return _message(
                await self._core.resume_task_type(
                    pb.ResumeTaskTypeRequest(name=name), request[_TENANT]
                )
            )
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"no route POST {request.path}: a task type takes POST "
            "/v1/taskTypes/{name}:pause or :resume, and PATCH /v1/taskTypes/{name}",
        )

    async def _workers(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/workers"
        return _message(await self._core.workers())

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/stats"
        return _json(await task_stats(self._core.store, self._throughput, request[_TENANT]))

    # -- schedules ------------------------------------------------------

    def _add_schedule_routes(self) -> None:
        add = self.app.router.add_route
        add("POST", "/v1/schedules", self._schedule_create)
        add("GET", "/v1/schedules", self._schedule_list)
        add("GET", "/v1/schedules/{name}", self._schedule_get)
        add("PATCH", "/v1/schedules/{name}", self._schedule_update)
        add("DELETE", "/v1/schedules/{name}", self._schedule_delete)
        add("POST", "/v1/schedules/{name}", self._schedule_post)

    async def _schedule_create(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/schedules"
        body = await _body(request, spb.CreateScheduleRequest())
        return _message(await self._schedules.create(body, request[_TENANT]))

    async def _schedule_list(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/schedules"
        query = request.query
        message = list_schedules_request(dict(query), {name: query.getall(name) for name in query})
        return _message(await self._schedules.list(message, request[_TENANT]))

    async def _schedule_get(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/schedules/{id}"
        message = spb.GetScheduleRequest(id=request.match_info["name"])
        return _message(await self._schedules.get(message, request[_TENANT]))

    async def _schedule_update(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "PATCH /v1/schedules/{id}"
        schedule_id = request.match_info["name"]
        body = await _body(request, spb.UpdateScheduleRequest())
        if body.schedule.id and body.schedule.id != schedule_id:
            raise invalid_argument(
                [("schedule.id", f"names {body.schedule.id!r}, the path {schedule_id!r}")]
            )
        body.schedule.id = schedule_id
        return _message(await self._schedules.update(body, request[_TENANT]))

    async def _schedule_delete(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "DELETE /v1/schedules/{id}"
        message = spb.DeleteScheduleRequest(id=request.match_info["name"])
        return _message(await self._schedules.delete(message, request[_TENANT]))

    async def _schedule_post(self, request: web.Request) -> web.StreamResponse:
        schedule_id, colon, verb = request.match_info["name"].rpartition(":")
        tenant = request[_TENANT]
        schedules = self._schedules
        if colon and verb == "pause":
            request[_ROUTE] = "POST /v1/schedules/{id}:pause"
            return _message(await schedules.pause(spb.PauseScheduleRequest(id=schedule_id), tenant))
        if colon and verb == "resume":
            request[_ROUTE] = "POST /v1/schedules/{id}:resume"
            resume = spb.ResumeScheduleRequest(id=schedule_id)
            return _message(await schedules.resume(resume, tenant))
        if colon and verb == "trigger":
            request[_ROUTE] = "POST /v1/schedules/{id}:trigger"
            # The body (a request_id) is optional.
            trigger = spb.TriggerScheduleRequest()
            if request.body_exists:
                trigger = await _body(request, trigger)
            trigger.id = schedule_id
            return _message(await schedules.trigger(trigger, tenant))
        raise ServiceError(
            grpc.StatusCode.NOT_FOUND,
            f"no route POST {request.path}: a schedule takes POST /v1/schedules/{{id}}:pause, "
            ":resume or :trigger",
        )

    # -- sessions -------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "POST /v1/session"
        if request.content_type != "application/json":
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                'send {"token": "..."} with \'Content-Type: application/json\'',
            )
        try:
            body = await request.json()
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                'the body must be {"token": "<bearer token>"}',
                [("token", "is required: a token the server was given")],
            )
        session = self._auth.login(token)
        response = _session_json(session)
        _set_cookie(response, session, self._ssl is not None)
        return response

    async def _session_get(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "GET /v1/session"
        cookie = request.cookies.get(SESSION_COOKIE)
        session = self._auth.session(cookie) if cookie else None
        if session is not None:
            return _session_json(session)
        if self._auth.tokens is None:
            return _json({"tenant": ""})  # authentication is off: no session to have
        raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, EXPIRED if cookie else MISSING)

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        request[_ROUTE] = "DELETE /v1/session"
        response = _json({})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response


def _session_json(session: Session) -> web.Response:
    return _json(
        {
            "tenant": session.tenant,
            "csrf_token": session.csrf_token,
            "expire_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(session.expire_time)),
        }
    )


_SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
_Event = TypeVar("_Event", bound=Message)


def _event(event_id: str, message: Message) -> bytes:
    return f"id: {event_id}\ndata: {dumps(to_json(message))}\n\n".encode()


async def _pump(
    response: web.StreamResponse,
    first: _Event | None,
    rest: AsyncIterator[_Event],
    event_of: Callable[[_Event], tuple[str, Message]],
) -> None:
    """Write `first` (if any) and then every message of `rest` to an event
    stream, prepared by then, with a keep-alive comment when nothing came
    for a while; ends the stream when `rest` ends, the client goes away or
    the store fails (a client resumes from its last event)."""
    if first is not None:
        await response.write(_event(*event_of(first)))
    pending: asyncio.Future[_Event] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(rest))
            done, _ = await asyncio.wait((pending,), timeout=KEEPALIVE_SECONDS)
            if not done:
                if response.prepared:
                    await response.write(b": keepalive\n\n")
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                break
            pending = None
            await response.write(_event(*event_of(message)))
    except (ConnectionError, *STORE_ERRORS):
        pass
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
    await response.write_eof()

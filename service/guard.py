"""The door of the service: an ASGI middleware in front of BentoML's handlers.

Every route declared in ``service.routes`` passes here before BentoML parses it, and gets
what its policy asks for, in this order:

- **shutdown**: while the worker drains after SIGTERM (:mod:`service.drain`), a new request
  gets 503 with ``Retry-After`` and ``Connection: close``; those already in flight finish;
- **key** (when ``VISION_API_KEYS_FILE`` is set, :mod:`service.access`): 401 with
  ``WWW-Authenticate`` without a valid key, the same answer for a missing and a wrong one;
- **rate** (``VISION_RATE``): 429 with ``Retry-After`` over the client's token bucket (a key's
  name, else the client's address);
- **overload** is refused before the body is read: with ``max_pending`` requests already
  between arrival and answer, a new one gets 503 with ``Retry-After`` at once (not a 504 after
  the timeout);
- **bytes**: a declared ``Content-Length`` above the limit is refused unread (413); the body is
  then read counting the bytes that actually arrive (chunked uploads included) and reading
  stops at the limit (413);
- **form**: only ``multipart/form-data`` (415 otherwise: BentoML would read a JSON body holding
  a URL as an address to download); parsed with tight limits (number of fields, size of a text
  field: 400/413 instead of Starlette's exceptions, which BentoML answers with a 500);
- **image**: must be an uploaded file part; a text field (a URL, a path, base64) is a 422 that
  names the accepted form, and nothing is ever downloaded or opened on the client's behalf.

A request that passes is replayed, byte for byte, to BentoML.
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse

from service.access import AUTH_REFUSED, RATE_LIMITED, UNAUTHORIZED, presented_key, retry_after
from service.drain import Drain
from service.memory import IdleTrim
from service.routes import Policy, policies

ACCEPTED = (
    "multipart/form-data with the image as a file part named 'image' (curl -F image=@photo.jpg)"
)


class RequestGuard:
    def __init__(
        self,
        app,
        max_bytes: int,
        routes: dict[str, Policy] | None = None,
        max_pending: int = 64,
        max_fields: int = 16,
        max_field_bytes: int = 1024,
        retry_after_s: int = 1,
        drain: Drain | None = None,
        idle: IdleTrim | None = None,
        keys=None,
        limiter=None,
    ):
        self.app, self.max_bytes = app, max_bytes
        self.routes = policies() if routes is None else dict(routes)
        self.max_pending, self.max_fields = max_pending, max_fields
        self.max_field_bytes, self.retry_after_s = max_field_bytes, retry_after_s
        self.keys, self.limiter = keys, limiter  # service.access.KeyRing / RateLimiter
        self.pending = 0
        self.refused = 0  # overload refusals since start (reported by /info)
        self.drain = drain
        if drain is not None:
            drain.in_flight = lambda: self.pending
        self.idle = idle
        if idle is not None:
            idle.in_flight = lambda: self.pending

    async def __call__(self, scope, receive, send):
        policy = self.routes.get(scope.get("path", "")) if scope["type"] == "http" else None
        if policy is None:
            return await self.app(scope, receive, send)
        if policy.model and self.idle is not None:
            self.idle.seen()
        if policy.model and self.drain is not None and self.drain.draining:
            return await _reply(
                scope,
                receive,
                send,
                503,
                "server shutting down: this instance takes no new requests; retry",
                headers={"Retry-After": str(self.retry_after_s), "Connection": "close"},
            )
        refusal = self._who(scope, policy)
        if refusal is not None:
            return await _reply(scope, receive, send, *refusal)
        if not policy.model:
            return await self.app(scope, receive, send)
        if self.pending >= self.max_pending:
            self.refused += 1
            return await _reply(
                scope,
                receive,
                send,
                503,
                f"server busy: {self.pending} requests are already waiting; retry shortly",
                headers={"Retry-After": str(self.retry_after_s)},
                pending=self.pending,
            )
        self.pending += 1
        try:
            if policy.upload:
                await self._guarded(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.pending -= 1

    def _who(self, scope, policy: Policy):
        """None when the caller may go on, else the refusal: (status, message, field,
        headers). The key itself never leaves this function."""
        name = None
        if policy.key and self.keys is not None:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            key = presented_key(headers)
            name = self.keys.name_of(key)
            if name is None:
                AUTH_REFUSED.labels(key="missing" if not key else "unknown").inc()
                www = {"WWW-Authenticate": 'Bearer realm="vision"'}
                return 401, UNAUTHORIZED, None, www
            scope.setdefault("state", {})["vision_key"] = name  # for logs: the name only
        if policy.rate and self.limiter is not None:
            client = name or (scope.get("client") or ("unknown",))[0]
            wait = self.limiter.take(client)
            if wait:
                RATE_LIMITED.labels(key=name or "address").inc()
                return (429, f"rate limit: more than {self.limiter.rate.per_s:g} requests/s "
                        f"(burst {self.limiter.rate.burst:g}) from this client; retry later",
                        None, {"Retry-After": retry_after(wait)})  # fmt: skip
        return None

    async def _guarded(self, scope, receive, send):
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "")
        if scope["method"] != "POST" or not ctype.startswith("multipart/form-data"):
            return await _reply(
                scope, receive, send, 415, f"expected {ACCEPTED}, got {ctype or 'no body type'}"
            )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            return await _too_big(scope, receive, send, int(length), self.max_bytes)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client is gone: nothing to answer, nothing to infer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:  # stop reading here
                return await _too_big(scope, receive, send, size, self.max_bytes)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        error = await self._check_form(scope, body)
        if error is not None:
            return await _reply(scope, receive, send, *error)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls: wait for the client's disconnect

        await self.app(scope, replay, send)

    async def _check_form(self, scope, body: bytes):
        """None when the form is acceptable, else (status, message, extra fields)."""
        done = False

        async def once():
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, once)
        try:
            form = await request.form(
                max_files=1, max_fields=self.max_fields, max_part_size=self.max_field_bytes
            )
        except Exception as e:  # noqa: BLE001 - malformed or over the limits: the client's fault
            status = 413 if "maximum" in str(e).lower() else 400
            return (
                status,
                f"expected a well-formed multipart form with at most {self.max_fields} fields "
                f"of at most {self.max_field_bytes} bytes each and one file, got: {e}",
            )
        try:
            image = form.get("image")
            if image is None:
                return 422, f"'image': expected {ACCEPTED}, got no 'image' field", "image"
            if not isinstance(image, UploadFile):
                return (
                    422,
                    f"'image': expected {ACCEPTED}, got a text field ({str(image)[:60]!r}); "
                    "URLs, paths and base64 strings are not accepted: nothing is downloaded",
                    "image",
                )
        finally:
            await form.close()
        return None


async def _too_big(scope, receive, send, size: int, limit: int):
    return await _reply(
        scope,
        receive,
        send,
        413,
        f"request body is {size} bytes or more: the limit is {limit} bytes",
        limit=limit,
    )


async def _reply(scope, receive, send, status: int, error: str, field=None, headers=None, **kw):
    body = {"error": error, **({"field": field} if field else {}), **kw}
    await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)

"""A size limit on the bodies of API requests (ASGI middleware): 413 with a JSON error, before the app reads more."""
from __future__ import annotations

from starlette.responses import JSONResponse


class BodyLimit:
    """413 for a request body to /api or /v1 over its limit: an upload (multipart) ``upload_bytes``, anything else
    ``json_bytes``; by its Content-Length when it has one, else by counting what arrives."""

    def __init__(self, app, json_bytes: int, upload_bytes: int) -> None:
        self.app, self.json_bytes, self.upload_bytes = app, json_bytes, upload_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/api/", "/v1/")):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        limit = self.upload_bytes if multipart else self.json_bytes
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            return await self._too_large(scope, send, multipart)
        received, over = 0, False

        async def counted():
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                over = True
                raise _TooLarge()
            return message

        async def guarded(message):
            if not over:  # once over, the app's own reply (a parse error) gives way to the 413
                await send(message)

        try:
            await self.app(scope, counted, guarded)
        except _TooLarge:
            pass
        if over:
            await self._too_large(scope, send, multipart)

    async def _too_large(self, scope, send, multipart: bool) -> None:
        what = f"an upload larger than {self.upload_bytes >> 20} MB (ASSISTANT_MAX_UPLOAD_MB)" if multipart else \
            f"a request body larger than {self.json_bytes >> 10} KB (ASSISTANT_MAX_REQUEST_KB)"
        message = f"{what} is refused"
        body = {"error": {"message": message, "type": "invalid_request_error"}} \
            if scope["path"].startswith("/v1/") else {"error": message}
        await JSONResponse(body, 413)(scope, None, send)


class _TooLarge(Exception):
    pass

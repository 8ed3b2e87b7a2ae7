"""HTTP/1.1 from the front of ``vggnet serve --workers N`` to one worker, over its Unix socket.

A small client of its own rather than a general one: the front forwards every request, and
under load a general client's connection pool (httpx's) took two thirds of the front's time,
which cut the service's throughput by 2.7x for a small model. This one keeps idle keep-alive
connections in a list, streams the request body through as it arrives, and hands the
answer to the ASGI ``send`` as it is read. It speaks to vggnet's own workers only (uvicorn),
so it needs no redirects, cookies, proxies or TLS.
"""

from __future__ import annotations

import asyncio

# the longest status line plus headers a worker may send, and the read size for bodies
_HEAD_LIMIT, _CHUNK = 1 << 20, 1 << 16
_MAX_IDLE = 256  # idle connections kept per worker; more are closed


class UpstreamError(Exception):
    """The worker failed (closed the connection, died) before its answer began."""


class ConnectFailed(UpstreamError):
    """No connection to the worker could be made: nothing of the request was sent."""


class ClientGone(Exception):
    """The client went away while its request body was being passed on: raise it from the
    body iterator (deliberately not an OSError, so it is not taken for the worker's fault)."""


class Upstream:
    """Requests to the worker listening on the Unix socket ``path``."""

    def __init__(self, path):
        self.path = str(path)
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self):
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_unix_connection(self.path, limit=_HEAD_LIMIT)
        except OSError as exc:  # the socket is gone or refuses: the worker is not there
            raise ConnectFailed(str(exc)) from None

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()

    async def request(self, method: str, target: str, headers: list, body, send) -> None:
        """Send the request (``headers``: (name, value) byte pairs, lower-case names, no
        hop-by-hop ones; ``body``: an async iterator of bytes) and pass the answer to the
        ASGI ``send``. Raises :class:`ConnectFailed` when nothing was sent,
        :class:`UpstreamError` when the worker failed before its answer began; a failure
        after that (the answer is cut short) raises the connection's own error."""
        reader, writer = await self._connect()
        reusable = False
        try:
            try:
                await _send_request(writer, method, target, headers, body)
                status, answer_headers = await _read_head(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as exc:
                raise UpstreamError(str(exc) or type(exc).__name__) from None
            await send({"type": "http.response.start", "status": status,
                        "headers": [(k, v) for k, v in answer_headers
                                    if k not in (b"connection", b"keep-alive",
                                                 b"transfer-encoding")]})
            reusable = await _relay_body(reader, method, status, dict(answer_headers), send)
        finally:
            if reusable and len(self.idle) < _MAX_IDLE:
                self.idle.append((reader, writer))
            else:
                writer.close()


async def _send_request(writer, method: str, target: str, headers: list, body) -> None:
    chunked = not any(k == b"content-length" for k, _ in headers)
    head = [f"{method} {target} HTTP/1.1\r\nhost: worker\r\n".encode("latin-1")]
    head += [k + b": " + v + b"\r\n" for k, v in headers]
    if chunked:
        head.append(b"transfer-encoding: chunked\r\n")
    writer.write(b"".join(head) + b"\r\n")
    async for chunk in body:
        if chunk:
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
            await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _read_head(reader) -> tuple[int, list]:
    """The status and headers of the final answer (an interim 1xx one is skipped)."""
    while True:
        raw = await reader.readuntil(b"\r\n\r\n")
        lines = raw[:-4].split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        if not 100 <= status < 200:
            break
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return status, headers


async def _relay_body(reader, method: str, status: int, headers: dict, send) -> bool:
    """Pass the answer's body on; True if the connection may carry another request."""
    more = {"type": "http.response.body", "more_body": True}
    keep = headers.get(b"connection", b"").lower() != b"close"
    if method == "HEAD" or status in (204, 304):
        await send({"type": "http.response.body", "body": b""})
        return keep
    if b"content-length" in headers:
        left = int(headers[b"content-length"])
        while left:
            chunk = await reader.read(min(left, _CHUNK))
            if not chunk:
                raise ConnectionResetError("the worker closed the connection mid-answer")
            left -= len(chunk)
            await send({**more, "body": chunk})
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await send({**more, "body": await reader.readexactly(size)})
            await reader.readexactly(2)
        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, if any
            pass
    else:  # the body runs to the end of the connection
        while chunk := await reader.read(_CHUNK):
            await send({**more, "body": chunk})
        keep = False
    await send({"type": "http.response.body", "body": b""})
    return keep

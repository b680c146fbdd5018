"""The launch gate's shell: asyncio + h11 (sans-IO HTTP/1.1, strict parsing, nothing hidden)
between the Docker clients and the engine's unix socket.

Each admitted request gets its own engine connection. A request is judged by
:mod:`clusterflow.gate.policy` before any byte of it reaches the engine; responses stream back as
they come (``logs?follow=1``, a long ``wait``), and ``attach``'s ``Upgrade: tcp`` becomes a raw
byte pipe once the engine answers 101.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse
from typing import Any

import h11

from clusterflow.gate import config as gate_config
from clusterflow.gate import policy
from clusterflow.gate.policy import Refusal, Route

log = logging.getLogger("clusterflow.gate")
MAX_HEADERS = 16 << 10
READ = 64 << 10
DRAIN = 1 << 20
# Never passed on: they describe one hop, and h11 frames each side itself.
HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"upgrade", b"te", b"trailer",
                         b"proxy-connection", b"content-length"})
REQUEST_HEADERS = frozenset({b"user-agent", b"accept"})


class Closed(Exception):
    """The client's connection is done with (closed, upgraded, or unusable after a refusal)."""


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(READ))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


class Gate:
    """One listening gate in front of the engine at ``config.socket``."""

    def __init__(self, config: gate_config.GateConfig):
        self.config = config

    async def start(self) -> asyncio.Server:
        return await asyncio.start_server(self.connection, self.config.host, self.config.port)

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADERS)
        try:
            while True:
                event = await _next(conn, reader)
                if not isinstance(event, h11.Request):
                    break
                await self.request(conn, reader, writer, event)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except h11.RemoteProtocolError as exc:
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                self._refuse(conn, writer, "-", "-", Refusal(f"malformed HTTP: {exc}", exc.error_status_hint))
        except (Closed, ConnectionError, OSError):
            pass
        except Exception:  # a bug here must not take the gate down: log it, drop this connection
            log.exception("connection dropped")
        finally:
            writer.close()

    async def request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, request: h11.Request) -> None:
        method, target = request.method.decode(), request.target.decode("ascii", "replace")
        try:
            found = policy.route(method, target)
            policy.credentials(name for name, _ in request.headers)
            if found.kind == "pull":  # the response is the engine's progress stream, passed on as it comes
                target = policy.pull(found, self.config.settings)
            elif found.kind == "distribution":
                target = policy.distribution(found, self.config.settings)
            body = await self._body(conn, reader, request, found.kind == "create")
            if found.kind == "create":
                body = policy.create_body(body, found.api, self.config.settings, gate_config.resolve_input)
                query = f"?{urllib.parse.urlencode(found.query)}" if found.query else ""
                target = f"/v{found.api}/containers/create{query}"
            elif found.kind == "container":
                checked = await self._container_target(conn, writer, found)
                if checked is None:
                    return
                target = checked
        except Refusal as refusal:
            await self._drain(conn, reader)
            self._refuse(conn, writer, method, target, refusal)
            return
        await self._forward(conn, reader, writer, request, target, body)

    async def _body(self, conn: h11.Connection, reader: asyncio.StreamReader, request: h11.Request,
                    wanted: bool) -> bytes:
        """The request's whole body: a create's JSON (a Content-Length of 1..64 KiB), else none."""
        headers = {k: v for k, v in request.headers}
        length = headers.get(b"content-length")
        if b"transfer-encoding" in headers:
            raise Refusal("chunked request bodies are not accepted: send a Content-Length", 411)
        if not wanted and length not in (None, b"0"):
            raise Refusal("only POST /containers/create takes a request body", 400)
        if wanted:
            if length is None:
                raise Refusal("create needs a Content-Length and a JSON body", 411)
            if int(length) == 0:
                raise Refusal("create with an empty body (Content-Length: 0)", 411)
            if int(length) > policy.MAX_BODY:
                raise Refusal(f"create body over {policy.MAX_BODY} bytes", 413)
        chunks = []
        while isinstance(event := await _next(conn, reader), h11.Data):
            chunks.append(bytes(event.data))
        if not isinstance(event, h11.EndOfMessage):
            raise Closed()
        return b"".join(chunks)

    async def _drain(self, conn: h11.Connection, reader: asyncio.StreamReader) -> None:
        """Read and drop a refused request's body (up to DRAIN bytes): the client then reads the
        refusal (a close with unread data would reset the connection) and may send the next one."""
        seen = 0
        while conn.their_state is h11.SEND_BODY and seen <= DRAIN:
            event = await _next(conn, reader)
            seen += len(event.data) if isinstance(event, h11.Data) else 0

    def _refuse(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str, target: str,
                refusal: Refusal) -> None:
        log.warning("refused %s %s: %s", method, urllib.parse.urlsplit(target).path, refusal.rule)
        body = refusal.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if conn.their_state is not h11.DONE:
            headers.append((b"connection", b"close"))
        writer.write(conn.send(h11.Response(status_code=refusal.status, headers=headers)))
        writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))

    async def _container_target(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                                found: Route) -> str | None:
        """The call's path with the container's full id, once the engine shows it is a step
        container (a missing one gets the engine's 404; others :class:`Refusal`)."""
        quoted = urllib.parse.quote(found.container or "")
        status, headers, body = await self._fetch(f"/v{found.api}/containers/{quoted}/json")
        if status != 200:
            writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
            writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
            return None
        try:
            inspected = json.loads(body)
        except ValueError:
            raise Refusal("the engine's inspect answer is not JSON") from None
        container = policy.clusterflow_container(inspected)
        query = f"?{urllib.parse.urlencode(found.query)}" if found.query else ""
        return f"/v{found.api}/containers/{container}{found.action}{query}"

    async def _engine(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]:
        try:
            reader, writer = await asyncio.open_unix_connection(self.config.socket)
        except OSError as exc:
            raise Refusal(f"no Docker engine at {self.config.socket}: {exc.strerror or exc}", 502) from None
        return reader, writer, h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEADERS)

    async def _fetch(self, target: str) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        reader, writer, up = await self._engine()
        try:
            writer.write(up.send(h11.Request(method="GET", target=target, headers=[(b"host", b"docker")])))
            writer.write(up.send(h11.EndOfMessage()))
            response = await _next(up, reader)
            chunks = []
            while isinstance(event := await _next(up, reader), h11.Data):
                chunks.append(bytes(event.data))
            body = b"".join(chunks)
            kept = [(k, v) for k, v in response.headers if k not in HOP_HEADERS]
            return response.status_code, [*kept, (b"content-length", str(len(body)).encode())], body
        finally:
            writer.close()

    async def _forward(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       request: h11.Request, target: str, body: bytes) -> None:
        """Send the checked request to the engine and stream its answer back."""
        try:
            up_reader, up_writer, up = await self._engine()
        except Refusal as refusal:
            self._refuse(conn, writer, request.method.decode(), target, refusal)
            return
        try:
            headers = [(b"host", b"docker"), *((k, v) for k, v in request.headers if k in REQUEST_HEADERS)]
            upgrade = dict(request.headers).get(b"upgrade")
            if upgrade is not None:
                headers += [(b"connection", b"Upgrade"), (b"upgrade", upgrade)]
            if body:
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            up_writer.write(up.send(h11.Request(method=request.method, target=target, headers=headers)))
            up_writer.write((up.send(h11.Data(data=body)) if body else b"") + up.send(h11.EndOfMessage()))
            while isinstance(response := await _next(up, up_reader), h11.InformationalResponse):
                if response.status_code == 101:
                    await self._switch(conn, reader, writer, response, up, up_reader, up_writer)
                    raise Closed()
            kept = [(k, v) for k, v in response.headers if k not in HOP_HEADERS or k == b"content-length"]
            writer.write(conn.send(h11.Response(status_code=response.status_code, headers=kept)))
            while isinstance(event := await _next(up, up_reader), h11.Data):
                writer.write(conn.send(h11.Data(data=event.data)))
                await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
        finally:
            up_writer.close()

    async def _switch(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      response: Any,
                      up: h11.Connection, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        """``attach``: pass the 101 on, then pipe raw bytes both ways until the engine ends the stream."""
        kept = [(k, v) for k, v in response.headers if k not in HOP_HEADERS]
        writer.write(conn.send(h11.InformationalResponse(
            status_code=101, headers=[*kept, (b"connection", b"Upgrade"), (b"upgrade", b"tcp")])))
        await writer.drain()  # the 101 alone first: docker-py reads the stream from the raw socket
        from_client, _ = conn.trailing_data
        from_engine, _ = up.trailing_data
        writer.write(from_engine)
        up_writer.write(from_client)
        to_engine = asyncio.create_task(_pipe(reader, up_writer))
        try:
            await _pipe(up_reader, writer)
        finally:
            to_engine.cancel()

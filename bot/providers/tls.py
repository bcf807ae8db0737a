"""One TLS context for every call's connections to the cloud providers.

Building a TLS context loads the whole CA bundle: ~22 ms of the event loop, during which no
live call is served. Pipecat builds the OpenAI service's HTTP client per call, and the
Deepgram SDK builds one per call too (live transcription never uses it: it speaks
WebSocket), so every call start stalled every other call for ~45 ms. At 50 calls, five call
starts a second took a quarter of the loop, and every underrun the capacity bench saw was in
that ramp. The WebSockets to Deepgram and Cartesia did the same once more each on a ``wss``
URL (the fakes speak ``ws``, so the bench never saw it). A context is safe to share between
clients and connections, so one per process is built and handed to all of them.
"""

from __future__ import annotations

import functools
import importlib.util
import ssl
from typing import Any


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """httpx's default context (certifi's CAs, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``)."""
    import httpx

    return httpx.create_ssl_context()


def with_shared_tls(uri: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``websockets`` connect arguments with the shared context on a ``wss`` URL."""
    if uri.startswith("wss://"):
        kwargs.setdefault("ssl", shared_tls_context())
    return kwargs


class SharedTLSWebsocket:
    """Mixin for a Pipecat ``WebsocketService``: its connections use the shared context."""

    async def _websocket_connect(self, uri: str, **kwargs: Any) -> Any:
        return await super()._websocket_connect(uri, **with_shared_tls(uri, kwargs))  # type: ignore[misc]


@functools.cache
def share_tls_in_deepgram_sdk() -> None:
    """Make the Deepgram SDK's live WebSocket and default HTTP client use the shared context.

    Pipecat's DeepgramSTTService builds its SDK client itself, so nothing can be passed in;
    the SDK's connect and default-client functions (deepgram-sdk 7) are wrapped instead.
    """
    from deepgram.listen.v1 import raw_client

    connect = raw_client.websockets_client_connect

    def connect_with_shared_tls(uri: str, **kwargs: Any) -> Any:
        return connect(uri, **with_shared_tls(uri, kwargs))

    connect_with_shared_tls.__wrapped__ = connect  # type: ignore[attr-defined]
    raw_client.websockets_client_connect = connect_with_shared_tls
    _share_tls_in_deepgram_http_client()


def _share_tls_in_deepgram_http_client() -> None:
    import httpx
    from deepgram import base_client

    original = base_client._make_default_async_client
    if importlib.util.find_spec("httpx_aiohttp") is not None:
        return  # the SDK then builds an aiohttp client, which is not ours to configure

    def make_client(timeout: float | None, follow_redirects: bool | None) -> Any:
        kwargs: dict[str, Any] = {"timeout": timeout, "verify": shared_tls_context()}
        if follow_redirects is not None:
            kwargs["follow_redirects"] = follow_redirects
        return httpx.AsyncClient(**kwargs)

    make_client.__wrapped__ = original  # type: ignore[attr-defined]
    base_client._make_default_async_client = make_client

"""From the settings to a dialled call: credentials checked, URLs built, one call placed.

Shared by ``python -m bot dial``, ``python -m bot campaign run`` and ``POST /api/calls``, so the
three refuse the same missing settings with the same words and place calls the same way.

Two modes: ``flow`` (``EXOTEL_APP_ID``: the flow with our Voicebot applet, so a transfer can
follow) and ``voice-ai`` (Connect Voice AI: ``StreamUrl`` straight to our WebSocket, built from
``PUBLIC_URL``; closing the socket hangs up, so **such a call cannot be transferred**).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from bot.config import Settings
from bot.dialer.contacts import normalise_phone
from bot.dialer.exotel_api import ExotelClient, PlacedCall
from bot.dialer.status import shared_callback_token, status_callback_url
from bot.dialer.variables import index_call_sid, store_call_variables
from bot.state.base import StateStore

Mode = Literal["flow", "voice-ai"]
MODES: tuple[Mode, ...] = ("flow", "voice-ai")
DEFAULT_TIME_LIMIT_SECS = 900


class DialerConfigError(ValueError):
    """A setting outbound calls need is missing; the message names every one of them."""


def missing_settings(settings: Settings, mode: Mode = "flow") -> list[str]:
    """The environment names of the settings ``mode`` needs and does not have."""
    needed = [
        ("EXOTEL_ACCOUNT_SID", settings.exotel_account_sid),
        ("EXOTEL_API_KEY", settings.exotel_api_key),
        ("EXOTEL_API_TOKEN", settings.exotel_api_token),
        ("EXOTEL_CALLER_ID", settings.exotel_caller_id),
    ]
    if mode == "flow":
        needed.append(("EXOTEL_APP_ID", settings.exotel_app_id))
    needed.append(("PUBLIC_URL", settings.public_url))
    return [name for name, value in needed if not _value(value)]


def check_dialer_settings(settings: Settings, mode: Mode = "flow") -> None:
    """Raise :class:`DialerConfigError` naming what is missing for outbound calls."""
    if mode not in MODES:
        raise DialerConfigError(f"--mode {mode!r}: use one of {', '.join(MODES)}")
    missing = missing_settings(settings, mode)
    if missing:
        where = {
            "EXOTEL_ACCOUNT_SID": "Exotel dashboard -> API settings",
            "EXOTEL_API_KEY": "Exotel dashboard -> API settings",
            "EXOTEL_API_TOKEN": "Exotel dashboard -> API settings",
            "EXOTEL_CALLER_ID": "your ExoPhone, e.g. 08047491899",
            "EXOTEL_APP_ID": "the id of the flow holding the Voicebot applet",
            "PUBLIC_URL": "where Exotel reaches this bot, e.g. https://bot.example.com",
        }
        parts = [f"{name} ({where[name]})" for name in missing]
        raise DialerConfigError(
            "outbound calls need these settings, which are not set: " + "; ".join(parts)
        )


def exotel_client(settings: Settings) -> ExotelClient:
    """The Calls API client for the configured account (check the settings first)."""
    assert settings.exotel_api_key is not None and settings.exotel_api_token is not None
    return ExotelClient(
        settings.exotel_account_sid or "",
        settings.exotel_api_key.get_secret_value(),
        settings.exotel_api_token.get_secret_value(),
        settings.exotel_api_url,
    )


def stream_url(settings: Settings) -> str:
    """Our WebSocket as Connect Voice AI dials it: ``wss://{PUBLIC_URL host}/exotel/ws?…``."""
    base = (settings.public_url or "").rstrip("/")
    scheme, _, rest = base.partition("://")
    ws_scheme = "wss" if scheme in ("https", "wss") else "ws"
    query = urlencode({"sample-rate": settings.bot_sample_rate})
    return f"{ws_scheme}://{rest}/exotel/ws?{query}"


@dataclass(frozen=True)
class CallOptions:
    """How every call of this process is placed (one of ``app_id`` / ``stream_url``)."""

    caller_id: str
    app_id: str | None
    stream_url: str | None
    status_callback: str
    time_limit: int = DEFAULT_TIME_LIMIT_SECS
    time_out: int = 30


async def call_options(
    settings: Settings,
    store: StateStore,
    mode: Mode = "flow",
    *,
    time_limit: int = DEFAULT_TIME_LIMIT_SECS,
    time_out: int = 30,
) -> CallOptions:
    """The options from the settings; the callback URL carries the store's shared token."""
    check_dialer_settings(settings, mode)
    token = await shared_callback_token(store)
    return CallOptions(
        caller_id=settings.exotel_caller_id or "",
        app_id=settings.exotel_app_id if mode == "flow" else None,
        stream_url=stream_url(settings) if mode == "voice-ai" else None,
        status_callback=status_callback_url(settings.public_url or "", token),
        time_limit=time_limit,
        time_out=time_out,
    )


async def place_call(
    store: StateStore,
    client: ExotelClient,
    options: CallOptions,
    to: str,
    variables: dict[str, str] | None = None,
) -> PlacedCall:
    """Dial ``to`` (normalised; raises ``InvalidNumber``) with its ``variables`` behind a token.

    Raises :class:`~bot.dialer.exotel_api.ExotelApiError` when Exotel refuses.
    """
    phone = normalise_phone(to)
    meta = {"source": "dial", "phone": phone}
    token = await store_call_variables(store, dict(variables or {}), meta=meta)
    placed = await client.connect_call(
        phone,
        options.caller_id,
        app_id=options.app_id,
        stream_url=options.stream_url,
        custom_field=token,
        status_callback=options.status_callback,
        time_limit=options.time_limit,
        time_out=options.time_out,
    )
    await index_call_sid(store, token, placed.call_sid)
    return placed


def _value(value: object) -> str:
    secret = getattr(value, "get_secret_value", None)
    return (secret() if secret else str(value or "")).strip()

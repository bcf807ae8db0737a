"""``python -m bot voices --provider cartesia --language hi``: the voices your key can use.

Hindi voice ids found in public code are unverified, so the bot does not ship one; this lists
what the configured ``CARTESIA_API_KEY`` can use, through Cartesia's own SDK (``cartesia``),
filtered by language, with the line to paste into the config. ``--base-url`` (or the host of
``CARTESIA_URL``) points it elsewhere, e.g. at the test kit's fake.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import urlsplit

from bot.config import ConfigError, Settings, load_settings
from bot.languages import normalise_language
from bot.providers import secret_value

CARTESIA_API = "https://api.cartesia.ai"
TIMEOUT_SECS = 10.0


def add_parser(sub: Any, run: Any) -> None:
    voices = sub.add_parser("voices", help="list the TTS voices your key can use, per language")
    voices.add_argument("--provider", default="cartesia", choices=("cartesia",))
    voices.add_argument("--language", help="e.g. hi, hi-IN, en (default: every language)")
    voices.add_argument("--base-url", help="the provider's REST API (default: from CARTESIA_URL)")
    voices.add_argument("--config", help="TOML config file (default: $BOT_CONFIG)")
    voices.set_defaults(run=run)


def rest_base(settings: Settings, override: str | None) -> str:
    """``--base-url``, else the scheme and host of ``CARTESIA_URL`` (wss -> https), else
    Cartesia's API."""
    if override:
        return override.rstrip("/")
    if settings.cartesia_url:
        parts = urlsplit(settings.cartesia_url)
        scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
        return f"{scheme}://{parts.netloc}"
    return CARTESIA_API


def cartesia_voices(api_key: str, base_url: str, language: str | None) -> list[Any]:
    """Every voice the key can use (all pages), of ``language`` (a bare code) if given."""
    from cartesia import Cartesia

    client = Cartesia(api_key=api_key, base_url=base_url, timeout=TIMEOUT_SECS, max_retries=1)
    try:
        return [v for v in client.voices.list(limit=100) if _speaks(v, language)]
    finally:
        client.close()


def _speaks(voice: Any, language: str | None) -> bool:
    if language is None:
        return True
    locales = [getattr(loc, "locale", "") for loc in getattr(voice, "locales", None) or ()]
    return voice.language == language or any(loc.split("-")[0] == language for loc in locales)


def print_voices(voices: Iterable[Any], tag: str | None, out: TextIO) -> int:
    voices = list(voices)
    if not voices:
        print(f"no voices{f' for {tag}' if tag else ''}", file=out)
        return 1
    for voice in voices:
        gender = getattr(voice, "gender", None) or "-"
        print(f"{voice.id}  {voice.language:<4} {gender:<10} {voice.name}", file=out)
    if tag:
        print(f'\nput one in the config:  [voices]  {tag} = "{voices[0].id}"', file=out)
        print(
            f"or the environment:     CARTESIA_VOICE_ID_{tag.upper().replace('-', '_')}=...",
            file=out,
        )
    return 0


def voices_main(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    settings = load_settings(args.config)
    key = secret_value(settings.cartesia_api_key)
    if not key:
        raise ConfigError("voices --provider cartesia needs CARTESIA_API_KEY ([cartesia] api_key)")
    tag = (
        normalise_language(args.language, key="--language", allow_auto=False)
        if args.language
        else None
    )
    language = tag.split("-")[0] if tag else None
    try:
        voices = cartesia_voices(key, rest_base(settings, args.base_url), language)
    except Exception as e:  # the SDK's APIError, a refused connection, a timeout
        print(f"could not list Cartesia voices: {e}", file=sys.stderr)
        return 1
    return print_voices(voices, tag, out)

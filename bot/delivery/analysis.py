"""After the call: a short summary and the fields the business asked for, from the transcript.

Configured by ``[analysis]`` (``summary = true``) and ``[analysis.extract]`` (a JSON Schema of
fields such as ``order_id``, ``callback_time``, ``satisfied``). :func:`analyze` asks an
OpenAI-compatible chat endpoint (the LLM provider the call used) for one JSON object with
``summary`` and ``extraction``, using structured output (``response_format``), and validates
the extraction against the schema with ``jsonschema``. It never raises: a timeout, a refused
connection, malformed JSON or fields that do not match become ``error`` in the result, which
the ``call.ended`` event carries as ``analysis_error`` (fields that did match are kept).

With the scripted (offline) responder there is no LLM: :func:`extraction_from_captures` keeps
the fields its intents captured that the schema accepts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators
from loguru import logger
from openai import AsyncOpenAI

MAX_TRANSCRIPT_CHARS = 24_000  # ~6k tokens: bounds the request; the end of a call matters most
ROLE_NAMES = {"caller": "Caller", "bot": "Bot"}


@dataclass(frozen=True)
class AnalysisConfig:
    """The ``[analysis]`` table. extract: a JSON Schema with ``type = "object"``."""

    summary: bool = False
    extract: dict[str, Any] | None = None
    timeout_secs: float = 20.0
    response_format: Literal["json_object", "json_schema"] = "json_object"

    def __post_init__(self) -> None:
        if self.extract is not None:
            check_extract_schema(self.extract)
        if self.timeout_secs <= 0:
            raise ValueError("[analysis] timeout_secs must be positive")
        if self.response_format not in ("json_object", "json_schema"):
            raise ValueError('[analysis] response_format is "json_object" or "json_schema"')

    @property
    def enabled(self) -> bool:
        return self.summary or self.extract is not None

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any]) -> AnalysisConfig:
        """From the parsed ``[analysis]`` TOML table; an unknown key is named in the error."""
        unknown = sorted(set(table) - {"summary", "extract", "timeout_secs", "response_format"})
        if unknown:
            raise ValueError(f"[analysis] has no key(s) {', '.join(unknown)}")
        if not isinstance(table.get("summary", False), bool):
            raise ValueError("[analysis] summary must be true or false")
        extract = table.get("extract")
        if extract is not None and not isinstance(extract, Mapping):
            raise ValueError("[analysis.extract] must be a table: a JSON Schema of fields")
        return cls(
            summary=table.get("summary", False),
            extract=dict(extract) if extract is not None else None,
            timeout_secs=float(table.get("timeout_secs", 20.0)),
            response_format=table.get("response_format", "json_object"),
        )


@dataclass(frozen=True)
class LLMEndpoint:
    """An OpenAI-compatible Chat Completions endpoint (``base_url`` ends in ``/v1``)."""

    base_url: str
    api_key: str
    model: str

    def __repr__(self) -> str:
        return f"LLMEndpoint(base_url={self.base_url!r}, model={self.model!r})"  # no key


@dataclass(frozen=True)
class AnalysisResult:
    """What goes into ``call.ended``: summary, extraction, and why either is missing."""

    summary: str | None = None
    extraction: dict[str, Any] | None = None
    error: str | None = None


def check_extract_schema(schema: Mapping[str, Any]) -> None:
    """Raise ValueError naming ``[analysis.extract]`` unless it is an object JSON Schema."""
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_exceptions.SchemaError as e:
        raise ValueError(f"[analysis.extract] is not a valid JSON Schema: {e.message}") from None
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), Mapping):
        raise ValueError('[analysis.extract] needs type = "object" and a properties table')


# --------------------------------------------------------------------------------------------
# With an LLM
# --------------------------------------------------------------------------------------------


async def analyze(
    config: AnalysisConfig,
    transcript: Sequence[Any],
    endpoint: LLMEndpoint,
    *,
    client_factory: Callable[[LLMEndpoint, float], AsyncOpenAI] | None = None,
) -> AnalysisResult:
    """Summary and extraction of one call; never raises (see the module docstring).

    transcript: turns with ``role`` (caller|bot) and ``text``, as mappings or objects
    (``bot.delivery.events.Turn``). Runs after the call, off the call's path.
    """
    if not config.enabled:
        return AnalysisResult()
    client = (client_factory or _client)(endpoint, config.timeout_secs)
    try:
        # the SDK's own timeout bounds each request; this bounds the whole exchange too
        answer = await asyncio.wait_for(
            _ask(client, config, transcript, endpoint.model), config.timeout_secs + 2.0
        )
    except TimeoutError:
        return AnalysisResult(error=f"analysis timed out after {config.timeout_secs:g} s")
    except Exception as e:  # any failure of the provider is recorded, never raised
        logger.warning(f"call analysis failed: {e.__class__.__name__}: {e}")
        return AnalysisResult(error=f"analysis failed: {e.__class__.__name__}: {e}"[:300])
    finally:
        await client.close()
    return _read_answer(config, answer)


def _client(endpoint: LLMEndpoint, timeout_secs: float) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key,
        timeout=timeout_secs,
        max_retries=0,  # one bounded try: the event waits for this, and it runs once per call
    )


async def _ask(
    client: AsyncOpenAI, config: AnalysisConfig, transcript: Sequence[Any], model: str
) -> str:
    completion = await client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": _instructions(config)},
            {"role": "user", "content": transcript_text(transcript)},
        ],
        response_format=_response_format(config),
        temperature=0,
        stream=False,
    )
    if not completion.choices or completion.choices[0].message.content is None:
        raise ValueError("the answer had no message content")
    return completion.choices[0].message.content


def transcript_text(transcript: Sequence[Any]) -> str:
    """``Caller: ...`` / ``Bot: ...`` lines, the last ``MAX_TRANSCRIPT_CHARS`` of them."""
    lines = []
    for turn in transcript:
        role = turn.get("role") if isinstance(turn, Mapping) else getattr(turn, "role", None)
        text = turn.get("text") if isinstance(turn, Mapping) else getattr(turn, "text", None)
        if text and str(text).strip():
            lines.append(f"{ROLE_NAMES.get(str(role), str(role).title())}: {str(text).strip()}")
    text = "\n".join(lines) or "(nobody spoke)"
    return text[-MAX_TRANSCRIPT_CHARS:]


def _instructions(config: AnalysisConfig) -> str:
    parts = [
        "You read the transcript of a finished phone call between a caller and a voice bot.",
        "Answer with one JSON object and nothing else.",
    ]
    if config.summary:
        parts.append(
            'Key "summary": two or three sentences in English: what the caller wanted and how '
            "the call ended."
        )
    if config.extract is not None:
        parts.append(
            'Key "extraction": an object of the fields the call gave, matching this JSON Schema: '
            f"{json.dumps(config.extract, ensure_ascii=False)}. Leave out any field the call "
            "did not give; never guess."
        )
    return "\n".join(parts)


def _response_format(config: AnalysisConfig) -> dict[str, Any]:
    if config.response_format == "json_object":
        return {"type": "json_object"}
    properties: dict[str, Any] = {}
    if config.summary:
        properties["summary"] = {"type": "string"}
    if config.extract is not None:
        properties["extraction"] = config.extract
    schema = {"type": "object", "properties": properties, "required": sorted(properties)}
    return {
        "type": "json_schema",
        "json_schema": {"name": "call_analysis", "schema": schema, "strict": False},
    }


def _read_answer(config: AnalysisConfig, answer: str) -> AnalysisResult:
    try:
        parsed = json.loads(answer)
    except ValueError:
        return AnalysisResult(error="analysis answer was not JSON")
    if not isinstance(parsed, dict):
        return AnalysisResult(error="analysis answer was not a JSON object")
    problems = []
    summary = parsed.get("summary") if config.summary else None
    if config.summary and not (isinstance(summary, str) and summary.strip()):
        problems.append("no summary in the answer")
        summary = None
    extraction = None
    if config.extract is not None:
        raw = parsed.get("extraction")
        if not isinstance(raw, dict):
            problems.append("no extraction object in the answer")
        else:
            extraction, errors = validate_extraction(config.extract, raw)
            problems += errors
    return AnalysisResult(
        summary=summary.strip() if summary else None,
        extraction=extraction,
        error="; ".join(problems) or None,
    )


# --------------------------------------------------------------------------------------------
# Validation, and the scripted responder's captures
# --------------------------------------------------------------------------------------------


def validate_extraction(
    schema: Mapping[str, Any], values: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The schema's fields of ``values`` that validate, and what was wrong (empty: all good).

    Fields the schema does not name are dropped; a field that fails is dropped and named.
    """
    kept, problems = {}, []
    for name, value in values.items():
        if name not in schema["properties"]:
            continue
        error = _field_error(schema, name, value)
        if error is None:
            kept[name] = value
        else:
            problems.append(f"extraction field {name!r}: {error}")
    missing = [name for name in schema.get("required", ()) if name not in kept]
    if missing:
        problems.append(f"extraction lacks required field(s) {', '.join(missing)}")
    return kept, problems


def extraction_from_captures(
    schema: Mapping[str, Any], captured: Mapping[str, Any]
) -> dict[str, Any]:
    """The captured values the schema accepts, for the scripted responder (no LLM).

    Captures are text ("yes", "42"); a field typed boolean/integer/number gets the value
    converted when it reads as one, so ``satisfied = "yes"`` becomes ``true``.
    """
    kept = {}
    for name, value in captured.items():
        subschema = schema["properties"].get(name)
        if not isinstance(subschema, Mapping):
            continue
        for candidate in (value, _converted(value, subschema)):
            if candidate is not None and _field_error(schema, name, candidate) is None:
                kept[name] = candidate
                break
    return kept


def _field_error(schema: Mapping[str, Any], name: str, value: Any) -> str | None:
    """Why ``{name: value}`` fails the schema (required fields aside), or None."""
    partial = {**schema, "required": []}  # the root keeps $defs, so $ref still resolves
    validator = validators.validator_for(partial)(partial)
    error = schema_exceptions.best_match(validator.iter_errors({name: value}))
    return None if error is None else error.message


def _converted(value: Any, subschema: Mapping[str, Any]) -> Any:
    if not isinstance(value, str):
        return None
    kinds = subschema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or ())
    text = value.strip().lower()
    if "boolean" in kinds and text in ("yes", "true", "y", "haan", "ha", "1"):
        return True
    if "boolean" in kinds and text in ("no", "false", "n", "nahin", "nahi", "0"):
        return False
    for kind, convert in (("integer", int), ("number", float)):
        if kind in kinds:
            try:
                return convert(text)
            except ValueError:
                continue
    return None

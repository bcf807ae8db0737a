"""HTTP tools from the config (``[[tools]]``), offered to the LLM as OpenAI function tools.

A tool is an HTTP endpoint of the business: the model asks for it with JSON arguments, the
runner checks them against the tool's JSON Schema, renders the URL, headers and string
arguments with the call's variables (``{{digits.pin}}`` reaches the endpoint, never the
model), sends the request and hands the answer (JSON or text, cut at 16 KB) back as the tool
result. A timeout, a non-2xx or a refused connection comes back as ``{"error": "..."}`` so the
model can apologise and the call goes on. Every call is recorded (name, masked arguments,
status, duration, result size) for the call record.
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlparse

import aiohttp
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema

from bot.agent.variables import (
    CALL_IDS,
    DIGITS_PREFIX,
    CallVariables,
    expand_env,
    render,
    render_json,
)
from bot.config import ConfigError

MAX_RESULT_BYTES = 16 * 1024
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
_QUERY_METHODS = ("GET", "DELETE")  # arguments as query parameters; the others send JSON
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class HttpToolConfig:
    """One ``[[tools]]`` entry.

    Attributes:
        name: the function name the model calls (letters, digits, ``_`` and ``-``).
        description: what the tool does and when to call it; the model reads it.
        url: the endpoint; may hold ``{{argument}}`` and ``{{variable}}`` templates, each
            value URL-encoded where it lands.
        method: GET/POST/PUT/PATCH/DELETE. POST (default), PUT and PATCH send a JSON body;
            GET and DELETE send the arguments as query parameters.
        timeout_secs: the whole request, connect to last byte.
        headers: extra headers; ``${ENV}`` is expanded at start, ``{{variable}}`` per call.
        say_while_running: spoken while the request runs; None: the holding-phrase rules.
        parameters: JSON Schema (an object) of the arguments, checked before each request.
    """

    name: str
    description: str
    url: str
    method: str = "POST"
    timeout_secs: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    say_while_running: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_SCHEMA))


_KEYS = {
    "name",
    "description",
    "url",
    "method",
    "timeout_secs",
    "headers",
    "say_while_running",
    "parameters",
}


def parse_tools(
    raw: list[dict[str, Any]] | None, environ: Mapping[str, str] | None = None
) -> list[HttpToolConfig]:
    """Check every ``[[tools]]`` entry; ConfigError names the tool and the key to fix."""
    tools: list[HttpToolConfig] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw or [], start=1):
        tool = _parse_tool(index, entry, environ)
        if tool.name in seen:
            raise ConfigError(f'[[tools]] "{tool.name}": name: two tools have this name')
        seen.add(tool.name)
        tools.append(tool)
    return tools


def _parse_tool(index: int, entry: Any, environ: Mapping[str, str] | None) -> HttpToolConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"[[tools]] entry {index} must be a table")
    name = entry.get("name")
    label = f'[[tools]] "{name}"' if isinstance(name, str) and name else f"[[tools]] entry {index}"
    for key in entry:
        if key not in _KEYS:
            hint = difflib.get_close_matches(str(key), _KEYS, n=1)
            fix = (
                f'; did you mean "{hint[0]}"?' if hint else f" (known: {', '.join(sorted(_KEYS))})"
            )
            raise ConfigError(f"{label}: unknown key {key!r}{fix}")
    for key in ("name", "description", "url"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{label}: {key} is missing (a non-empty string)")
    if not all(c.isalnum() or c in "_-" for c in name) or len(name) > 64:
        raise ConfigError(f"{label}: name may hold letters, digits, _ and - only (at most 64)")
    if urlparse(entry["url"]).scheme not in ("http", "https"):
        raise ConfigError(f"{label}: url must start with http:// or https://")
    method = str(entry.get("method", "POST")).upper()
    if method not in METHODS:
        raise ConfigError(f"{label}: method {entry.get('method')!r} is not one of {METHODS}")
    timeout = entry.get("timeout_secs", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 60:
        raise ConfigError(f"{label}: timeout_secs must be a number of seconds in (0, 60]")
    headers = entry.get("headers", {})
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f'{label}: headers must be a table of strings, e.g. {{ X-Key = "…" }}')
    expanded = {
        str(k): expand_env(v, tool=name, header=str(k), environ=environ) for k, v in headers.items()
    }
    say = entry.get("say_while_running")
    if say is not None and not isinstance(say, str):
        raise ConfigError(f"{label}: say_while_running must be a string")
    parameters = entry.get("parameters", dict(_EMPTY_SCHEMA))
    _check_schema(label, parameters)
    return HttpToolConfig(
        name=name,
        description=entry["description"].strip(),
        url=entry["url"],
        method=method,
        timeout_secs=float(timeout),
        headers=expanded,
        say_while_running=say or None,
        parameters=parameters,
    )


def _check_schema(label: str, parameters: Any) -> None:
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ConfigError(f'{label}: parameters must be a JSON Schema with type = "object"')
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as e:
        where = ".".join(str(p) for p in e.path) or "(top)"
        raise ConfigError(
            f"{label}: parameters is not a valid JSON Schema at {where}: {e.message}"
        ) from None


def to_function_schema(tool: HttpToolConfig) -> FunctionSchema:
    """The tool as Pipecat's FunctionSchema (what the OpenAI adapter sends as a tool)."""
    return FunctionSchema(
        name=tool.name,
        description=tool.description,
        properties=dict(tool.parameters.get("properties", {})),
        required=list(tool.parameters.get("required", [])),
    )


def tools_schema(
    tools: list[HttpToolConfig], extra: list[FunctionSchema] | None = None
) -> ToolsSchema:
    """Every HTTP tool (and the built-ins in ``extra``) for ``LLMContext(tools=...)``."""
    return ToolsSchema(standard_tools=[*(extra or []), *map(to_function_schema, tools)])


@dataclass(frozen=True)
class ToolCallRecord:
    """One tool call as the call record keeps it; the arguments have keypad digits masked."""

    name: str
    arguments: str
    status: str  # ok | error | timeout | invalid
    duration_secs: float
    result_bytes: int
    error: str | None = None


class ToolCallLog(list[ToolCallRecord]):
    """The call's tool calls, in order."""

    def as_dicts(self) -> list[dict[str, Any]]:
        return [dict(vars(record)) for record in self]


class _Failure(Exception):
    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class HttpToolRunner:
    """Runs one call's HTTP tools; keeps their :class:`ToolCallLog`.

    Give it the process's ``aiohttp.ClientSession`` to share connections, or let it open its
    own (closed by :meth:`close`).
    """

    def __init__(self, session: aiohttp.ClientSession | None = None) -> None:
        self._session = session
        self._own_session = session is None
        self.log = ToolCallLog()
        self._validators: dict[str, Draft202012Validator] = {}

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def run(
        self, tool: HttpToolConfig, arguments: Mapping[str, Any], call: CallVariables
    ) -> dict[str, Any] | str:
        """The tool's answer for the model, or ``{"error": ...}``; never raises on I/O."""
        started = time.monotonic()
        shown = call.hide_secrets(json.dumps(dict(arguments), ensure_ascii=False, default=str))
        try:
            problem = self._invalid(tool, arguments)
            if problem:
                raise _Failure("invalid", f"invalid arguments: {problem}")
            result, size = await self._request(tool, dict(arguments), call)
        except _Failure as failure:
            elapsed = time.monotonic() - started
            message = call.hide_secrets(str(failure))
            self.log.append(ToolCallRecord(tool.name, shown, failure.status, elapsed, 0, message))
            logger.warning(f"tool {tool.name}: {message} ({elapsed:.2f} s)")
            return {"error": message}
        elapsed = time.monotonic() - started
        self.log.append(ToolCallRecord(tool.name, shown, "ok", elapsed, size))
        logger.info(f"tool {tool.name}: ok, {size} bytes in {elapsed:.2f} s")
        return result

    def _invalid(self, tool: HttpToolConfig, arguments: Mapping[str, Any]) -> str | None:
        validator = self._validators.get(tool.name)
        if validator is None:
            validator = self._validators[tool.name] = Draft202012Validator(dict(tool.parameters))
        error = next(iter(validator.iter_errors(dict(arguments))), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path)
        return f"{error.message}" + (f" (at {where})" if where else "")

    async def _request(
        self, tool: HttpToolConfig, arguments: dict[str, Any], call: CallVariables
    ) -> tuple[dict[str, Any] | str, int]:
        rendered = render_json(arguments, call)
        # The model's arguments may fill the URL, but never stand in for the call's ids or
        # its keypad digits.
        names = {
            k: _query_value(v)
            for k, v in rendered.items()
            if k not in CALL_IDS and not k.startswith(DIGITS_PREFIX)
        }
        url = render(tool.url, call, extra=names, escape=lambda v: quote(v, safe=""))
        headers = {k: render(v, call) for k, v in tool.headers.items()}
        headers["X-Call-Sid"] = call.get("call_sid") or ""
        kwargs: dict[str, Any] = {"headers": headers}
        if tool.method in _QUERY_METHODS:
            kwargs["params"] = {k: _query_value(v) for k, v in rendered.items()}
        else:
            kwargs["json"] = {"tool": tool.name, "arguments": rendered, "call": _call_info(call)}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=tool.timeout_secs)
        try:
            async with self._session.request(tool.method, url, timeout=timeout, **kwargs) as resp:
                if not 200 <= resp.status < 300:
                    raise _Failure("error", f"{tool.name} answered HTTP {resp.status}")
                body = await _read_capped(resp)
                return _decode(body, resp.content_type), len(body)
        except TimeoutError:
            raise _Failure(
                "timeout", f"{tool.name} timed out after {tool.timeout_secs:g} s"
            ) from None
        except aiohttp.ClientError as e:
            raise _Failure(
                "error", f"{tool.name} could not be reached ({type(e).__name__})"
            ) from None


def _call_info(call: CallVariables) -> dict[str, Any]:
    # Keypad digits are masked here: a tool gets them only where its config templates them.
    info: dict[str, Any] = {key: call.get(key) or "" for key in CALL_IDS}
    info["variables"] = call.masked()
    return info


def _query_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_RESULT_BYTES:
        chunk = await resp.content.read(MAX_RESULT_BYTES - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _decode(body: bytes, content_type: str) -> dict[str, Any] | str:
    text = body.decode("utf-8", errors="replace")
    if len(body) >= MAX_RESULT_BYTES:
        return text  # cut: no longer valid JSON, hand the model the text
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text
    return data if isinstance(data, dict) else {"result": data}

"""The business's own tools: HTTP requests the chat model may ask for during a call (an order's
status, the next free appointment), declared by the admin in a JSON file (``[tools] file``).

Each tool has a name, a description the model reads, a JSON schema of its arguments, a method,
a URL template and headers (secrets from the environment: ``${env:NAME}``). The model's arguments
are checked against the schema before anything is sent (arguments that do not fit are never
sent); each argument goes into the URL percent-encoded (it can fill a path segment or the query,
never change the host or the path around it), the rest as the query (GET) or a JSON body (POST).
The answer, cut to ``[tools] max_response_chars``, goes back to the model, which then answers the
caller in words. A tool that fails or does not answer in time becomes a spoken apology.

The file is read when it changes (no restart); run as root, it must be root's alone, like the
config (it holds the secrets' names and the addresses the assistant may reach).
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import Config
from ..errors import ConfigError
from ..system.trust import check_root_only_file
from ..types import ToolCall, ToolSpec

_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_ENV = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
MAX_FILE_BYTES = 1_000_000
# Names the call actions use (call.actions): a tool may not take one.
RESERVED = frozenset({"transfer", "take_message", "end_call"})


@dataclass(frozen=True)
class HttpTool:
    name: str
    description: str
    parameters: Mapping[str, Any]
    method: str
    url: str
    headers: Mapping[str, str]
    timeout: float

    def spec(self) -> ToolSpec:
        return ToolSpec(self.name, self.description, self.parameters)


@dataclass(frozen=True)
class ToolResult:
    """What a tool call gave: ``content`` for the model (ok), or why it failed (``sent``: whether
    a request went out at all)."""

    ok: bool
    content: str = ""
    error: str = ""
    sent: bool = False
    status: int | None = None


def _schema_validator(schema: Mapping[str, Any], where: str) -> Any:
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ConfigError(f"{where}: its parameters are not a valid JSON schema: {exc.message}") from None
    return jsonschema.Draft202012Validator(schema)


def _tool(entry: Any, index: int, source: str, environ: Mapping[str, str]) -> HttpTool:
    where = f"tool {index + 1} in {source}"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where} is not an object")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in RESERVED:
        raise ConfigError(f"{where}: name {name!r} must be lower-case letters, digits and _ (not {', '.join(sorted(RESERVED))})")
    where = f"tool {name} in {source}"
    description = entry.get("description")
    if not isinstance(description, str) or not description.strip():
        raise ConfigError(f"{where}: a description (what the model reads to choose it) is needed")
    parameters = entry.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        raise ConfigError(f"{where}: parameters must be a JSON schema of type object")
    _schema_validator(parameters, where)
    method = str(entry.get("method", "GET")).upper()
    if method not in ("GET", "POST"):
        raise ConfigError(f"{where}: method must be GET or POST")
    url = entry.get("url")
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https") \
            or not urllib.parse.urlsplit(url).hostname or "{" in (urllib.parse.urlsplit(url).netloc or ""):
        raise ConfigError(f"{where}: url must be http(s)://host/... (arguments may fill the path and query only)")
    unknown = set(_FIELD.findall(url)) - set(parameters.get("properties", {}))
    if unknown:
        raise ConfigError(f"{where}: the url names {', '.join(sorted(unknown))}, not among its parameters")
    headers: dict[str, str] = {}
    for key, value in (entry.get("headers") or {}).items():
        if not isinstance(value, str) or re.search(r"[\r\n]", key + value):
            raise ConfigError(f"{where}: header {key!r} must be a one-line text")

        def secret(match: re.Match[str]) -> str:
            if match[1] not in environ:
                raise ConfigError(f"{where}: header {key} needs the environment variable {match[1]}")
            return environ[match[1]]

        headers[str(key)] = _ENV.sub(secret, value)
    timeout = entry.get("timeout", 5)
    if not isinstance(timeout, int | float) or not 0.1 <= timeout <= 60:
        raise ConfigError(f"{where}: timeout must be 0.1 to 60 seconds")
    return HttpTool(name, description.strip(), parameters, method, url, headers, float(timeout))


def read_tools(path: str, environ: Mapping[str, str] | None = None) -> tuple[HttpTool, ...]:
    """The tools of the JSON file ``path`` (``{"tools": [...]}``), checked; ConfigError names what
    is wrong."""
    if os.geteuid() == 0:  # as for the config: a command run as root trusts only root's files
        check_root_only_file(path, "tools file")
    try:
        raw = Path(path).read_bytes()[:MAX_FILE_BYTES + 1]
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"tools file {path} is larger than {MAX_FILE_BYTES} bytes")
        document = json.loads(raw)
    except OSError as exc:
        raise ConfigError(f"tools file {path} cannot be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ConfigError(f"tools file {path} is not JSON: {exc}") from None
    entries = document.get("tools") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(f'tools file {path} must hold {{"tools": [...]}}')
    tools = tuple(_tool(entry, i, path, os.environ if environ is None else environ) for i, entry in enumerate(entries))
    names = [tool.name for tool in tools]
    if len(set(names)) != len(names):
        raise ConfigError(f"tools file {path} names a tool twice")
    return tools


class _Cache:
    """The tools file's tools, read again when it changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[str, int, int] | None = None
        self._tools: tuple[HttpTool, ...] = ()

    def tools(self, path: str) -> tuple[HttpTool, ...]:
        if not path:
            return ()
        try:
            info = os.stat(path)
        except OSError as exc:
            raise ConfigError(f"tools file {path} cannot be read: {exc.strerror or exc}") from None
        key = (path, info.st_mtime_ns, info.st_size)
        with self._lock:
            if key != self._key:
                self._tools, self._key = read_tools(path), key
            return self._tools


_CACHE = _Cache()


def configured_tools(config: Config) -> tuple[HttpTool, ...]:
    """The configured tools (none when ``[tools] file`` is not set)."""
    return _CACHE.tools(config.tools.file)


def find_tool(config: Config, name: str) -> HttpTool | None:
    return next((tool for tool in configured_tools(config) if tool.name == name), None)


def _request(tool: HttpTool, arguments: Mapping[str, Any]) -> urllib.request.Request:
    used = set(_FIELD.findall(tool.url))
    url = _FIELD.sub(lambda m: urllib.parse.quote(str(arguments.get(m[1], "")), safe=""), tool.url)
    rest = {k: v for k, v in arguments.items() if k not in used}
    headers = {"User-Agent": f"voiceassist/{__version__}", "Accept": "application/json, text/plain;q=0.9",
               **tool.headers}
    body = None
    if tool.method == "GET" and rest:
        query = urllib.parse.urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in rest.items()})
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + query
    elif tool.method == "POST":
        body = json.dumps(rest, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/json"
    return urllib.request.Request(url, data=body, headers=headers, method=tool.method)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A tool reaches the address the admin wrote, not one its answer points elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def run_tool(tool: HttpTool, call: ToolCall, max_chars: int) -> ToolResult:
    """Check the model's arguments, make the request, and return its answer (or why not)."""
    arguments = call.arguments if isinstance(call.arguments, Mapping) else None
    if arguments is None:
        return ToolResult(False, error="the arguments are not an object")
    errors = sorted(_schema_validator(tool.parameters, tool.name).iter_errors(dict(arguments)), key=str)
    if errors:
        return ToolResult(False, error=f"invalid arguments: {errors[0].message}"[:300])
    request = _request(tool, arguments)
    try:
        with _OPENER.open(request, timeout=tool.timeout) as response:
            data = response.read(max_chars * 4 + 1)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return ToolResult(False, error=f"HTTP {exc.code}", sent=True, status=exc.code)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return ToolResult(False, error=f"no answer: {reason}"[:300], sent=True)
    if not 200 <= status < 300:
        return ToolResult(False, error=f"HTTP {status}", sent=True, status=status)
    text = data.decode("utf-8", "replace")
    if len(text) > max_chars:
        text = text[:max_chars] + " [cut]"
    return ToolResult(True, content=text, sent=True, status=status)

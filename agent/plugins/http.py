"""http_client(): one HTTP request from the endpoint, as Velociraptor's plugin makes it.

Rows have Velociraptor's columns: ``Url``, ``Content`` (text, or the path of a temporary file
holding the body when ``tempfile_extension`` is given), ``Response`` (the status code, or 500
with the reason in ``Content`` when no answer came) and ``Headers``. A body is returned in rows
of at most ``chunk_size`` bytes. Certificates are checked unless ``skip_verify`` (or
``disable_ssl_security``) says otherwise; ``root_ca`` adds a CA in PEM.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile as tempfile_module
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any

from agent.plugins.blocking import call_blocking
from agent.plugins.temporary import PREFIX, temporaries
from velotui.vql.registry import Registry
from velotui.vql.scope import Scope
from velotui.vql.values import cell_text

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024
TIMEOUT_SECONDS = 60.0
DEFAULT_USER_AGENT = "velotui"


def register(registry: Registry) -> None:
    registry.plugin(http_client)


def _text_mapping(value: Any) -> dict[str, str] | None:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): cell_text(v) for k, v in value.items()}
    return None


def _context(skip_verify: bool, root_ca: Any) -> ssl.SSLContext:
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context = ssl.create_default_context()
    if isinstance(root_ca, str) and root_ca.strip():
        context.load_verify_locations(cadata=root_ca)
    return context


def _request(request: urllib.request.Request, context: ssl.SSLContext, keep: str | None
             ) -> tuple[int, dict[str, str], bytes | str]:
    """Status, headers and the body (or the path it was saved to); blocking."""
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context)
    except urllib.error.HTTPError as error:
        response = error  # an answer all the same: its status and body are the result
    with contextlib.closing(response):
        status = response.status if hasattr(response, "status") else response.code
        headers = dict(response.headers.items())
        if keep is None:
            return status, headers, response.read(MAX_BODY_BYTES)
        descriptor, path = tempfile_module.mkstemp(prefix=PREFIX, suffix=keep)
        with os.fdopen(descriptor, "wb") as handle:
            written = 0
            while written < MAX_BODY_BYTES and (block := response.read(1024 * 1024)):
                handle.write(block)
                written += len(block)
        return status, headers, path


async def http_client(
    scope: Scope, *, url: Any, params: Any = None, headers: Any = None, method: Any = None,
    data: Any = None, chunk_size: Any = None, disable_ssl_security: Any = False,
    skip_verify: Any = False, tempfile_extension: Any = None, remove_last: Any = False,
    root_ca: Any = None, cookie_jar: Any = None, user_agent: Any = None, secret: Any = None,
    files: Any = None,
) -> AsyncIterator[dict[str, Any]]:
    """Request ``url`` (``method`` GET, or POST when ``data`` is given) with ``params`` (the
    query string, or the form body of a POST without ``data``) and ``headers``; rows of Url,
    Content, Response and Headers. ``secret``, ``files`` and ``cookie_jar`` are not supported:
    refused, saying so."""
    unsupported = [name for name, value in (("secret", secret), ("files", files),
                                            ("cookie_jar", cookie_jar)) if value]
    if unsupported:
        scope.error(f"http_client(): {', '.join(unsupported)} is not supported here")
        return
    urls = url if isinstance(url, list | tuple) else [url]
    query, extra_headers = _text_mapping(params), _text_mapping(headers)
    if query is None or extra_headers is None:
        scope.error("http_client(): params and headers must be dicts")
        return
    size = chunk_size if isinstance(chunk_size, int) and chunk_size > 0 else DEFAULT_CHUNK_SIZE
    verb = (method if isinstance(method, str) and method else
            "POST" if data is not None else "GET").upper()
    body = data.encode("utf-8") if isinstance(data, str) else data if isinstance(
        data, bytes) else None
    for each in urls:
        if not isinstance(each, str) or urllib.parse.urlsplit(each).scheme not in (
                "http", "https"):
            scope.error(f"http_client(): {each!r} is not an http or https URL")
            continue
        target = each
        if query and (verb == "GET" or body is not None):
            target += ("&" if "?" in each else "?") + urllib.parse.urlencode(query)
        elif query:
            body = urllib.parse.urlencode(query).encode("utf-8")
        request = urllib.request.Request(target, data=body, method=verb, headers={
            "User-Agent": user_agent if isinstance(user_agent, str) else DEFAULT_USER_AGENT,
            **extra_headers})
        keep = tempfile_extension if isinstance(tempfile_extension, str) else None
        try:
            context = _context(bool(skip_verify or disable_ssl_security), root_ca)
            status, answer_headers, content = await call_blocking(_request, request, context,
                                                                  keep)
        except (OSError, ValueError, ssl.SSLError) as error:
            reason = getattr(error, "reason", None) or error
            yield {"Url": each, "Content": str(reason), "Response": 500, "Headers": {}}
            continue
        if isinstance(content, str):
            temporaries(scope).add(content, remove_last=bool(remove_last))
            yield {"Url": each, "Content": content, "Response": status,
                   "Headers": answer_headers}
            continue
        for start in range(0, max(len(content), 1), size):
            chunk = content[start:start + size]
            yield {"Url": each, "Content": chunk.decode("utf-8", errors="replace"),
                   "Response": status, "Headers": answer_headers}

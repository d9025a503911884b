"""Requests and responses as the toy shop sees them, whatever carries them (HTTP or memory)."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["PATH_HEADER", "Request", "Response"]

PATH_HEADER = "X-Faultline-Path"  # the services a request went through, comma-separated


@dataclass(frozen=True)
class Request:
    """An HTTP-shaped request: method, path, JSON body and headers.

    ``target`` names the service a client is sending it to (for wrappers, interceptors and
    metrics); it is not sent on the wire.
    """

    method: str
    path: str
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    target: str = ""

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header's value, matching the name case-insensitively as HTTP does."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return default


@dataclass(frozen=True)
class Response:
    """An HTTP-shaped response; ``path`` lists the services that handled the request.

    ``bytes_per_second`` is not sent anywhere: it tells a transport to deliver the body
    slowly (the ``Slow`` fault).
    """

    status: int
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    path: tuple[str, ...] = ()
    bytes_per_second: float | None = None

    @property
    def ok(self) -> bool:
        return self.status < 400

    def body(self) -> bytes:
        """The body as it goes on the wire."""
        return b"" if self.json is None else jsonlib.dumps(self.json).encode()

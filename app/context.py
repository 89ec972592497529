"""What the current request is, for code far from the HTTP edge: its id, the client's
address and who the caller turned out to be. Set by the edge middleware
(app.problems.EdgeMiddleware); read by the audit trail and the request log."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
client_ip_var: ContextVar[str | None] = ContextVar("client_ip", default=None)


@dataclass(slots=True)
class Caller:
    """Who the request turned out to be from, filled in once the token is verified."""

    user_id: int | None = None


# Set (to a fresh Caller) only while request logs are on: a mutable slot, so the code that
# verifies the token can fill it in from wherever it runs.
caller_var: ContextVar[Caller | None] = ContextVar("caller", default=None)

"""Authentication: the operator's bearer token, and callers with ids and roles.

The operator token comes from `$TETHER_TOKEN` when set, else it is generated on first start
and kept in the data directory (mode 0600). Requests present it as `Authorization: Bearer
<token>`. A request may name the caller it acts for with `X-Tether-Caller: <id>` and
`X-Tether-Roles: role1,role2`; without them the caller is the operator (every role).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from fastapi import HTTPException, Request

from tether.contract.types import Caller

TOKEN_ENV = "TETHER_TOKEN"
TOKEN_FILE = "api-token"


def load_or_create_token(data_dir: Path) -> tuple[str, bool]:
    """(token, created): `$TETHER_TOKEN`, else the stored token, else a new one stored 0600."""
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return from_env, False
    path = data_dir / TOKEN_FILE
    if path.is_file():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token, True


def token_matches(given: str, token: str) -> bool:
    """`given` is the operator token, compared in constant time (as bytes: a header with
    non-ASCII characters is a wrong token, not an error)."""
    return bool(given) and hmac.compare_digest(given.strip().encode(), token.encode())


def check_bearer(request: Request, token: str) -> None:
    """Raise 401 unless the request carries the operator token (compared in constant time)."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not token_matches(given, token):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token: send Authorization: Bearer <token> "
            "(printed by `tether serve`, or $TETHER_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def caller_of(request: Request) -> Caller:
    """The caller a request acts for (`X-Tether-Caller`, `X-Tether-Roles`), else the operator."""
    caller_id = request.headers.get("x-tether-caller")
    if not caller_id:
        return Caller.operator()
    roles = request.headers.get("x-tether-roles", "")
    return Caller(
        caller_id.strip()[:200], frozenset(r.strip() for r in roles.split(",") if r.strip())
    )

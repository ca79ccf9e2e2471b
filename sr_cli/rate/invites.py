"""Invite links and admin links of a rating session: unguessable tokens, stored hashed.

A token is ``secrets.token_urlsafe(32)`` (256 random bits). The database keeps only its SHA-256
digest (:data:`sr_cli.rate.db.tokens`), so a copy of ``votes.db`` lets nobody vote or read the
admin page; the link itself is printed once, when it is made. With 256 random bits a plain
digest is enough: there is nothing to brute-force, so no salt or slow hash is needed.

* A *rater* token belongs to one rater name of one session: whoever holds the link votes as
  that rater and as nobody else. A new link for the same rater revokes the old one.
* An *admin* token opens the session's admin page (progress and live scores). Every ``sr-rate``
  process makes its own and revokes it when it stops.

A session with at least one rater link is *by invitation*: the server refuses every vote and
every item request that does not carry a valid rater token (HTTP 403).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from sr_cli.errors import ConfigError
from sr_cli.rate import db

ROLES = ("rater", "admin")
#: The name an admin token is stored under.
ADMIN = "admin"


@dataclass(frozen=True)
class Holder:
    """Who a valid token belongs to."""

    role: str
    name: str


def digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def parse_names(text: str, option: str = "--raters") -> list[str]:
    """``"alice, bob"`` -> ``["alice", "bob"]`` (checked rater names, in order, no repeats)."""
    names = []
    for part in text.split(","):
        try:
            name = db.check_rater_name(part)
        except ConfigError as exc:
            raise ConfigError(f"{option} {text!r}: {exc}") from None
        if name in names:
            raise ConfigError(f"{option} {text!r} names {name!r} twice")
        names.append(name)
    return names


def issue(engine: Engine, sid: int, name: str, role: str = "rater") -> str:
    """A new token for ``name`` (role ``rater``) or an admin token; a rater's earlier links are
    revoked in the same transaction. Returns the token (it is not stored)."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    name = db.check_rater_name(name) if role == "rater" else ADMIN
    token = new_token()
    now = time.time()
    with engine.begin() as conn:
        if role == "rater":
            conn.execute(
                update(db.tokens)
                .where(
                    db.tokens.c.session_id == sid,
                    db.tokens.c.role == "rater",
                    db.tokens.c.name == name,
                    db.tokens.c.revoked.is_(None),
                )
                .values(revoked=now)
            )
        conn.execute(
            insert(db.tokens).values(
                session_id=sid, role=role, name=name, digest=digest(token), created=now
            )
        )
    return token


def revoke(engine: Engine, token: str) -> None:
    """Revoke one token (no-op when it is unknown or already revoked)."""
    with engine.begin() as conn:
        conn.execute(
            update(db.tokens)
            .where(db.tokens.c.digest == digest(token), db.tokens.c.revoked.is_(None))
            .values(revoked=time.time())
        )


def invited(engine: Engine, sid: int) -> list[str]:
    """Rater names of the session with a valid invite link, in the order they were invited."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(db.tokens.c.name)
            .where(
                db.tokens.c.session_id == sid,
                db.tokens.c.role == "rater",
                db.tokens.c.revoked.is_(None),
            )
            .order_by(db.tokens.c.id)
        ).scalars()
        return list(dict.fromkeys(rows))


def by_invitation(engine: Engine, sid: int) -> bool:
    """Whether the session has ever had a rater link (then every vote needs one)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(db.tokens.c.id)
            .where(db.tokens.c.session_id == sid, db.tokens.c.role == "rater")
            .limit(1)
        ).scalar()
        return found is not None


def ensure(engine: Engine, sid: int, names: Iterable[str], renew: Iterable[str] = ()) -> dict:
    """Links for ``names`` that have none yet, and new links for ``renew`` (their old ones are
    revoked): ``{name: token}`` of the links made now."""
    have = set(invited(engine, sid))
    made: dict[str, str] = {}
    for name in names:
        if name not in have:
            made[name] = issue(engine, sid, name)
            have.add(name)
    for name in renew:
        made[name] = issue(engine, sid, name)
    return made


def holder(engine: Engine, sid: int, token: str | None) -> Holder | None:
    """Who a token belongs to in session ``sid`` (``None``: no token, unknown or revoked)."""
    if not token or len(token) > 256:
        return None
    with engine.connect() as conn:
        row = conn.execute(
            select(db.tokens.c.role, db.tokens.c.name).where(
                db.tokens.c.digest == digest(token),
                db.tokens.c.session_id == sid,
                db.tokens.c.revoked.is_(None),
            )
        ).first()
    return Holder(row.role, row.name) if row is not None else None

"""The votes database: sessions, runs, items (regions to rate), raters, votes and access tokens.

Any database SQLAlchemy supports works (``--db postgresql://...``); the default is a SQLite
file. Every vote is written in its own transaction, so a crash or a closed tab loses at most
the vote being cast. The same rater never rates the same item twice: ``UNIQUE(rater, item)``
in the schema, so two identical votes arriving at once store one and refuse the other.

On SQLite the connection runs in WAL mode and every transaction starts with
``BEGIN IMMEDIATE``: concurrent writers queue on the busy timeout instead of failing.

Access tokens (invite links, admin pages: :mod:`sr_cli.rate.invites`) are stored as their
SHA-256 digests only; the links themselves are printed once, when they are made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)

from sr_cli.errors import ConfigError, SrCliError, one_line

MODES = ("pairwise", "absolute")
#: Pairwise choices, relative to the item's stored runs ``run_a`` / ``run_b``.
PAIR_CHOICES = ("a", "b", "same")
RATING_RANGE = (1, 5)
MAX_NAME = 64

metadata = MetaData()

sessions = Table(
    "rate_sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("mode", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("config", Text, nullable=False),
)

runs = Table(
    "rate_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("rate_sessions.id"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("name", String(256), nullable=False),
    Column("checkpoint", Text, nullable=False),
    Column("digest", String(64), nullable=False),
    UniqueConstraint("session_id", "idx"),
)

items = Table(
    "rate_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("rate_sessions.id"), nullable=False),
    Column("image", String(512), nullable=False),
    Column("y", Integer, nullable=False),
    Column("x", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("run_a", Integer, nullable=False),  # run idx
    Column("run_b", Integer, nullable=True),  # run idx; NULL in absolute mode
    Column("reason", String(16), nullable=False),  # "diff" or "random"
)

raters = Table(
    "rate_raters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("rate_sessions.id"), nullable=False),
    Column("name", String(MAX_NAME), nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("session_id", "name"),
)

votes = Table(
    "rate_votes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("rate_sessions.id"), nullable=False),
    Column("item_id", Integer, ForeignKey("rate_items.id"), nullable=False),
    Column("rater_id", Integer, ForeignKey("rate_raters.id"), nullable=False),
    Column("choice", String(8), nullable=True),  # pairwise: a | b | same
    Column("rating", Integer, nullable=True),  # absolute: 1..5
    Column("left_run", Integer, nullable=True),  # run idx shown on the left (position bias)
    Column("created", Float, nullable=False),
    UniqueConstraint("rater_id", "item_id", name="one_vote_per_rater_and_item"),
    CheckConstraint(
        "(choice IN ('a', 'b', 'same') AND rating IS NULL) OR "
        "(choice IS NULL AND rating BETWEEN 1 AND 5)",
        name="vote_is_choice_or_rating",
    ),
)


#: Invite links (role ``rater``) and admin pages (role ``admin``): a token's SHA-256 digest, the
#: rater it belongs to, and when it was revoked (a new link for the same rater, or the end of
#: the ``sr-rate`` process that made an admin link).
tokens = Table(
    "rate_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("session_id", Integer, ForeignKey("rate_sessions.id"), nullable=False),
    Column("role", String(8), nullable=False),
    Column("name", String(MAX_NAME), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
    Column("revoked", Float, nullable=True),
    CheckConstraint("role IN ('rater', 'admin')", name="token_role"),
)


class DuplicateVote(SrCliError):
    """The rater has already rated this item."""


@dataclass
class Item:
    id: int
    image: str
    y: int
    x: int
    size: int
    run_a: int
    run_b: int | None
    reason: str


@dataclass
class Vote:
    item_id: int
    rater: str
    choice: str | None
    rating: int | None
    left_run: int | None


def default_url(path: str) -> str:
    return f"sqlite:///{path}"


def sqlite_file(url: str) -> str | None:
    """The database file of an ``sqlite:///PATH`` URL (``None``: in memory or another server)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///") :].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the schema created; SQLite tuned for concurrent writers.

    Raises:
        ConfigError: one line naming the URL (and the file, for SQLite): not a URL SQLAlchemy
            can open, a file that is not an SQLite database (left untouched), a folder that
            cannot be written, a server that does not answer.
    """
    from sr_cli.serialization import file_problem

    path = sqlite_file(url)
    if path is not None:
        problem = file_problem(path)
        if problem not in (None, "does not exist"):
            raise ConfigError(
                f"--db {url!r}: the database file {path!r} {problem}; pass another --db (or -o)."
            )
    try:
        is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"--db {url!r} is not a database URL SQLAlchemy can open ({exc}); use e.g. "
            "sqlite:///votes.db or postgresql://user@host/db (with its driver installed)"
        ) from exc
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver hook
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below start transactions
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:  # pragma: no cover - driver hook
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        metadata.create_all(engine)
    except OperationalError as exc:
        raise ConfigError(
            f"cannot open the votes database {url!r}: {one_line(exc.orig)}. "
            "Check the path (its folder must exist and be writable) or the server."
        ) from exc
    except DatabaseError as exc:  # e.g. "file is not a database"
        if path is None:
            raise
        engine.dispose()
        raise ConfigError(
            f"--db {url!r}: {path!r} is not an SQLite database ({one_line(exc.orig)}); it is left "
            "untouched. Pass the votes database sr-rate wrote (or another --db / -o)."
        ) from exc
    return engine


def check_rater_name(name: Any) -> str:
    """A rater name: 1 to 64 printable characters (surrounding spaces removed)."""
    if not isinstance(name, str):
        raise ConfigError("the rater name must be a string")
    name = name.strip()
    if not name:
        raise ConfigError("the rater name is empty: type your name first")
    if len(name) > MAX_NAME:
        raise ConfigError(f"the rater name is longer than {MAX_NAME} characters")
    if not name.isprintable():
        raise ConfigError("the rater name contains control characters")
    return name


# ---------------------------------------------------------------------------- sessions
def find_session(engine: Engine, fingerprint: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(
            select(sessions.c.id).where(sessions.c.fingerprint == fingerprint)
        ).scalar()


def create_session(
    engine: Engine,
    fingerprint: str,
    mode: str,
    config: dict,
    run_rows: Sequence[dict],
    item_rows: Sequence[dict],
) -> int:
    """Create a session with its runs and items in one transaction; returns its id."""
    with engine.begin() as conn:
        sid = conn.execute(
            insert(sessions).values(
                fingerprint=fingerprint,
                mode=mode,
                created=time.time(),
                config=json.dumps(config, sort_keys=True),
            )
        ).inserted_primary_key[0]
        conn.execute(insert(runs), [{**r, "session_id": sid} for r in run_rows])
        if item_rows:
            conn.execute(insert(items), [{**r, "session_id": sid} for r in item_rows])
    return int(sid)


def list_sessions(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(sessions).order_by(sessions.c.id)).mappings().all()
        out = []
        for r in rows:
            names = conn.execute(
                select(runs.c.name).where(runs.c.session_id == r["id"]).order_by(runs.c.idx)
            ).scalars()
            n = conn.execute(
                select(func.count()).select_from(votes).where(votes.c.session_id == r["id"])
            ).scalar()
            out.append({**dict(r), "runs": list(names), "votes": int(n)})
    return out


def session_info(engine: Engine, sid: int) -> dict:
    """``{"mode", "config", "runs": [{idx, name, checkpoint, digest}]}`` of a session."""
    with engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.id == sid)).mappings().first()
        if row is None:
            raise ConfigError(f"there is no session {sid} in the votes database")
        rs = conn.execute(
            select(runs.c.idx, runs.c.name, runs.c.checkpoint, runs.c.digest)
            .where(runs.c.session_id == sid)
            .order_by(runs.c.idx)
        ).mappings()
        return {
            "id": sid,
            "mode": row["mode"],
            "fingerprint": row["fingerprint"],
            "config": json.loads(row["config"]),
            "runs": [dict(r) for r in rs],
        }


def session_items(engine: Engine, sid: int) -> list[Item]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(items).where(items.c.session_id == sid).order_by(items.c.id)
        ).mappings()
        return [
            Item(
                r["id"], r["image"], r["y"], r["x"], r["size"], r["run_a"], r["run_b"], r["reason"]
            )
            for r in rows
        ]


# ---------------------------------------------------------------------------- votes
def _rater_id(conn, sid: int, name: str) -> int:
    rid = conn.execute(
        select(raters.c.id).where(raters.c.session_id == sid, raters.c.name == name)
    ).scalar()
    if rid is None:
        rid = conn.execute(
            insert(raters).values(session_id=sid, name=name, created=time.time())
        ).inserted_primary_key[0]
    return int(rid)


def record_vote(
    engine: Engine,
    sid: int,
    item_id: int,
    rater: str,
    choice: str | None = None,
    rating: int | None = None,
    left_run: int | None = None,
) -> None:
    """Store one vote in its own transaction.

    Raises:
        DuplicateVote: this rater has already rated this item (nothing is changed).
    """
    if (choice is None) == (rating is None):
        raise ConfigError("a vote is either a pairwise choice or a 1-5 rating")
    if choice is not None and choice not in PAIR_CHOICES:
        raise ConfigError(f"choice {choice!r} is not one of {list(PAIR_CHOICES)}")
    if rating is not None and not RATING_RANGE[0] <= rating <= RATING_RANGE[1]:
        raise ConfigError(f"rating {rating!r} is not between 1 and 5")
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                rid = _rater_id(conn, sid, rater)
                exists = conn.execute(
                    select(votes.c.id).where(votes.c.rater_id == rid, votes.c.item_id == item_id)
                ).scalar()
                if exists is not None:
                    raise DuplicateVote(f"{rater!r} has already rated item {item_id}")
                conn.execute(
                    insert(votes).values(
                        session_id=sid,
                        item_id=item_id,
                        rater_id=rid,
                        choice=choice,
                        rating=rating,
                        left_run=left_run,
                        created=time.time(),
                    )
                )
            return
        except IntegrityError:
            # A concurrent transaction created the same rater or vote first: look again.
            if attempt == 4:
                raise
        except OperationalError as exc:  # "database is locked" beyond the busy timeout
            if "locked" not in str(exc) or attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))


def rated_items(engine: Engine, sid: int, rater: str) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(votes.c.item_id)
            .join(raters, raters.c.id == votes.c.rater_id)
            .where(votes.c.session_id == sid, raters.c.name == rater)
        ).scalars()
        return set(rows)


def session_votes(engine: Engine, sid: int) -> list[Vote]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(votes.c.item_id, raters.c.name, votes.c.choice, votes.c.rating, votes.c.left_run)
            .join(raters, raters.c.id == votes.c.rater_id)
            .where(votes.c.session_id == sid)
            .order_by(votes.c.id)
        ).all()
        return [Vote(*r) for r in rows]


def votes_per_rater(engine: Engine, sid: int) -> dict[str, int]:
    """``{rater: number of votes}`` of a session (raters without a vote are absent)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(raters.c.name, func.count(votes.c.id))
            .join(votes, votes.c.rater_id == raters.c.id)
            .where(votes.c.session_id == sid)
            .group_by(raters.c.name)
        ).all()
        return {name: int(n) for name, n in rows}


def count_votes(engine: Engine, sid: int) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(votes).where(votes.c.session_id == sid)
            ).scalar()
        )

"""The session being rated, without HTTP: items, per-rater order and sides, image tokens, votes,
who may vote (invite links) and the admin view (progress and live scores).

Each rater sees the items in an order of their own and the two runs of a pair on sides of
their own, both derived from the session fingerprint and the rater's name, so a reload or a
server restart shows the same thing again. Image URLs are random tokens that say nothing
about the run; run names never reach the rating page (only the admin view has them).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from sr_cli.errors import ConfigError, SrCliError
from sr_cli.rate import db, invites

#: Bootstrap resamples of the admin page's live intervals (as ``sr-rate --results``).
ADMIN_BOOTSTRAP = 1000
#: Seconds the admin page's scores are reused while votes come in (a fit with its bootstrap
#: takes seconds: it runs at most this often, whatever the number of admin pages).
ADMIN_REFRESH_S = 10.0


class BadVote(ConfigError):
    """A malformed vote (HTTP 400)."""


class Forbidden(SrCliError):
    """No valid token for what was asked (HTTP 403)."""


def _stable_int(*parts: Any) -> int:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big")


class RateApp:
    """The session being rated: its items, image tokens, votes and access rules."""

    def __init__(
        self,
        engine: Engine,
        session_id: int,
        mode: str,
        fingerprint: str,
        items: list[db.Item],
        crops_dir: Path,
        show_gt: bool = False,
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.mode = mode
        self.fingerprint = fingerprint
        self.items = {it.id: it for it in items}
        self.show_gt = show_gt
        self._files: dict[str, Path] = {}
        self._tokens: dict[tuple[int, str], str] = {}
        roles = ("a", "b", "gt") if mode == "pairwise" else ("a", "gt")
        for it in items:
            for role in roles:
                token = secrets.token_urlsafe(12)
                self._tokens[it.id, role] = token
                self._files[token] = crops_dir / f"{it.id}_{role}.png"
        self._lock = threading.Lock()
        self._scores: tuple[int, float, dict | None] | None = None

    # ------------------------------------------------------------------ access
    @property
    def by_invitation(self) -> bool:
        """Whether votes need a rater's invite link (read from the database on every call, so
        links made by another ``sr-rate`` process take effect at once)."""
        return invites.by_invitation(self.engine, self.session_id)

    def rater_for(self, token: str | None, claimed: Any = None) -> str:
        """The rater a request acts for.

        By invitation, the token's rater: a missing, unknown or revoked token, an admin token,
        or a ``claimed`` name that is not the token's, raises :class:`Forbidden`. Otherwise
        (an open session on localhost) the ``claimed`` name, checked.
        """
        if self.by_invitation or token:
            who = invites.holder(self.engine, self.session_id, token)
            if who is None or who.role != "rater":
                raise Forbidden(
                    "this session is by invitation: open the invite link you were given"
                    if not token
                    else "this invite link is not valid (unknown, or replaced by a newer link)"
                )
            if claimed not in (None, "", who.name):
                raise Forbidden(
                    f"this invite link is {who.name!r}'s: you can only vote as yourself"
                )
            return who.name
        try:
            return db.check_rater_name(claimed)
        except ConfigError as exc:
            raise BadVote(str(exc)) from None

    def check_admin(self, token: str | None) -> None:
        who = invites.holder(self.engine, self.session_id, token)
        if who is None or who.role != "admin":
            raise Forbidden("the admin page needs the admin link sr-rate printed when it started")

    # ------------------------------------------------------------------ per rater
    def order(self, rater: str) -> list[int]:
        """The items in this rater's order (stable across reloads and restarts)."""
        return sorted(self.items, key=lambda i: _stable_int(self.fingerprint, rater, "order", i))

    def left_is_a(self, rater: str, item_id: int) -> bool:
        return _stable_int(self.fingerprint, rater, "side", item_id) % 2 == 0

    def side_runs(self, rater: str, item_id: int) -> dict[str, int | None]:
        """Run index shown on each side to ``rater`` (for analyses and tests)."""
        it = self.items[item_id]
        if self.mode != "pairwise":
            return {"left": it.run_a, "right": None}
        if self.left_is_a(rater, item_id):
            return {"left": it.run_a, "right": it.run_b}
        return {"left": it.run_b, "right": it.run_a}

    def run_of_image(self, url: str) -> tuple[int, int | None] | None:
        """``(item, run index)`` of an image URL (``None`` for GT or unknown)."""
        token = url.rsplit("/", 1)[-1].removesuffix(".png")
        for (item_id, role), t in self._tokens.items():
            if t == token:
                it = self.items[item_id]
                return item_id, {"a": it.run_a, "b": it.run_b}.get(role)
        return None

    def next_item(self, rater: str) -> dict:
        rater = db.check_rater_name(rater)
        done = db.rated_items(self.engine, self.session_id, rater) & set(self.items)
        total = len(self.items)
        todo = [i for i in self.order(rater) if i not in done]
        if not todo:
            return {"finished": True, "rater": rater, "done": len(done), "total": total}
        item_id = todo[0]
        it = self.items[item_id]
        if self.mode == "pairwise":
            left, right = ("a", "b") if self.left_is_a(rater, item_id) else ("b", "a")
            images = {
                "left": f"/img/{self._tokens[item_id, left]}.png",
                "right": f"/img/{self._tokens[item_id, right]}.png",
            }
        else:
            images = {"left": f"/img/{self._tokens[item_id, 'a']}.png"}
        images["gt"] = f"/img/{self._tokens[item_id, 'gt']}.png" if self.show_gt else None
        return {
            "finished": False,
            "rater": rater,
            "item": item_id,
            "mode": self.mode,
            "size": it.size,
            "images": images,
            "done": len(done),
            "total": total,
        }

    def vote(self, payload: Any, rater: str | None = None) -> dict:
        """Validate and store one vote of ``rater`` (by invitation: the token's rater; else the
        payload's ``rater``). Raises :class:`BadVote` or :class:`db.DuplicateVote`."""
        if not isinstance(payload, dict):
            raise BadVote("the vote must be a JSON object")
        allowed = {"rater", "item", "choice", "rating"}
        extra = set(payload) - allowed
        if extra:
            raise BadVote(
                f"unknown field(s) {sorted(extra)} in the vote; allowed: {sorted(allowed)}"
            )
        if rater is None:
            try:
                rater = db.check_rater_name(payload.get("rater"))
            except ConfigError as exc:
                raise BadVote(str(exc)) from None
        item_id = payload.get("item")
        if not isinstance(item_id, int) or isinstance(item_id, bool) or item_id not in self.items:
            raise BadVote(f"item {item_id!r} is not an item of this session")
        sides = self.side_runs(rater, item_id)
        if self.mode == "pairwise":
            if "rating" in payload:
                raise BadVote("this is a pairwise session: send choice=left|right|same, no rating")
            choice = payload.get("choice")
            if choice not in ("left", "right", "same"):
                raise BadVote(f"choice {choice!r} must be 'left', 'right' or 'same'")
            it = self.items[item_id]
            stored = "same"
            if choice != "same":
                winner = sides[choice]
                stored = "a" if winner == it.run_a else "b"
            db.record_vote(
                self.engine, self.session_id, item_id, rater, choice=stored, left_run=sides["left"]
            )
        else:
            if "choice" in payload:
                raise BadVote("this is an absolute session: send rating=1..5, no choice")
            rating = payload.get("rating")
            if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
                raise BadVote(f"rating {rating!r} must be an integer from 1 to 5")
            db.record_vote(self.engine, self.session_id, item_id, rater, rating=rating)
        done = len(db.rated_items(self.engine, self.session_id, rater) & set(self.items))
        return {"ok": True, "done": done, "total": len(self.items)}

    def image(self, token: str) -> Path | None:
        return self._files.get(token)

    # ------------------------------------------------------------------ admin
    def progress(self) -> list[dict]:
        """Items rated by every rater who voted or holds an invite link."""
        counts = db.votes_per_rater(self.engine, self.session_id)
        names = list(dict.fromkeys([*invites.invited(self.engine, self.session_id), *counts]))
        total = len(self.items)
        return [{"rater": n, "done": counts.get(n, 0), "total": total} for n in names]

    def scores(self) -> dict | None:
        """The live scores with their 95% bootstrap intervals (``sr-rate --results``' figures,
        ``votes`` says how many votes they are from), recomputed when votes came in, at most
        every :data:`ADMIN_REFRESH_S` seconds; ``None`` before the first vote."""
        from sr_cli.rate.aggregate import summarize

        n = db.count_votes(self.engine, self.session_id)
        with self._lock:
            if self._scores is not None:
                counted, when, table = self._scores
                if counted == n or (
                    table is not None and time.monotonic() - when < ADMIN_REFRESH_S
                ):
                    return table
            if n == 0:
                table = None
            else:
                res = summarize(self.engine, self.session_id, n_boot=ADMIN_BOOTSTRAP, seed=0)
                table = {
                    "votes": res.n_votes,
                    "bootstrap": res.n_boot,
                    "runs": [
                        {
                            "run": res.names[k],
                            "score": _num(res.score[k]),
                            "ci_low": _num(res.ci_low[k]),
                            "ci_high": _num(res.ci_high[k]),
                            "votes": res.votes_per_run[k],
                            "win_rate": _num(res.win_rate[k]),
                        }
                        for k in res.order()
                    ],
                    "krippendorff_alpha": _num(res.alpha_agreement),
                    "shared_items": res.shared_items,
                }
            self._scores = (n, time.monotonic(), table)
            return table

    def admin_view(self) -> dict:
        return {
            "session": self.session_id,
            "mode": self.mode,
            "items": len(self.items),
            "by_invitation": self.by_invitation,
            "progress": self.progress(),
            "scores": self.scores(),
        }


def _num(x: Any) -> float | None:
    """A JSON number, or ``None`` for a missing or NaN value."""
    if x is None:
        return None
    x = float(x)
    return None if x != x else x

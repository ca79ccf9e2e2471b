"""Turn the votes of a session into scores: Bradley-Terry for pairs, means for 1-5 ratings.

Pairwise mode fits the Bradley-Terry model ``P(i preferred to j) = sigmoid(s_i - s_j)``
(Bradley & Terry, Biometrika 1952) by maximum likelihood with scipy, a "same" vote counting
half a win for each side (Rao & Kupper's simplest tie treatment). A weak Gaussian prior
(``alpha``, default 0.01, i.e. a standard deviation of 10 on the log-strengths) keeps the
score of a run that never loses finite. Scores are log-strengths centred on 0: a difference
of 1 means the better run is preferred ``sigmoid(1) = 73%`` of the time.

Absolute mode reports the classic mean opinion score (mean of the 1-5 ratings).

Both come with a 95% percentile-bootstrap interval (votes resampled with replacement,
seeded), and the agreement between raters: Krippendorff's alpha (nominal for pairwise
choices, interval for ratings) over the items rated by two raters or more, and the raw
fraction of agreeing rating pairs.
"""

from __future__ import annotations

import csv
import html
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sr_cli.errors import ConfigError
from sr_cli.rate import db

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- Bradley-Terry
def bradley_terry(wins: np.ndarray, alpha: float = 0.01) -> np.ndarray:
    """Maximum-likelihood (MAP with a Gaussian prior of precision ``alpha``) log-strengths.

    Args:
        wins: ``(n, n)``, ``wins[i, j]`` = times ``i`` was preferred to ``j`` (ties: 0.5 each).
        alpha: prior precision; 0 gives the plain MLE (needs a strongly connected win graph).

    Returns:
        ``(n,)`` scores with mean 0.
    """
    from scipy.optimize import minimize

    w = np.asarray(wins, dtype=np.float64)
    n_games = w + w.T

    def nll(theta: np.ndarray) -> float:
        d = theta[:, None] - theta[None, :]
        return float((w * np.logaddexp(0.0, -d)).sum()) + 0.5 * alpha * float(theta @ theta)

    def grad(theta: np.ndarray) -> np.ndarray:
        d = theta[:, None] - theta[None, :]
        g = w / (1.0 + np.exp(d))  # W_ij * (1 - sigmoid(d_ij))
        return -g.sum(1) + g.sum(0) + alpha * theta

    def hess(theta: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(theta[:, None] - theta[None, :])))
        v = n_games * p * (1.0 - p)
        np.fill_diagonal(v, 0.0)
        return np.diag(v.sum(1) + alpha) - v

    # Newton steps in a trust region: the problem is (strictly, with alpha > 0) convex.
    res = minimize(
        nll,
        np.zeros(w.shape[0]),
        jac=grad,
        hess=hess,
        method="trust-exact",
        options={"gtol": 1e-10},
    )
    theta = res.x
    return theta - theta.mean()


def win_matrices(pairs: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(wins, ties)`` from rows ``(winner_or_a, loser_or_b, is_tie)``."""
    wins = np.zeros((n, n))
    ties = np.zeros((n, n))
    if len(pairs):
        i, j, t = pairs[:, 0], pairs[:, 1], pairs[:, 2].astype(bool)
        np.add.at(wins, (i[~t], j[~t]), 1.0)
        np.add.at(ties, (i[t], j[t]), 1.0)
        np.add.at(ties, (j[t], i[t]), 1.0)
    return wins, ties


def fit_pairs(pairs: np.ndarray, n: int, alpha: float) -> np.ndarray:
    wins, ties = win_matrices(pairs, n)
    return bradley_terry(wins + 0.5 * ties, alpha)


def bootstrap(
    fn, data: np.ndarray, n_boot: int, seed: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of ``fn(resampled data)`` over ``n_boot`` resamples of the rows."""
    rng = np.random.default_rng(seed)
    stats = np.stack([fn(data[rng.integers(0, len(data), len(data))]) for _ in range(n_boot)])
    q = (1 - level) / 2
    return np.nanquantile(stats, q, axis=0), np.nanquantile(stats, 1 - q, axis=0)


# ---------------------------------------------------------------------------- agreement
def krippendorff_alpha(units: list[list[Any]], metric: str = "nominal") -> float | None:
    """Krippendorff's alpha of the values given to each unit (units with < 2 values ignored).

    ``metric``: ``nominal`` (categories) or ``interval`` (numbers). ``None`` when no unit has
    two values or when all values are the same (alpha is undefined there)."""
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    values = sorted({v for u in units for v in u}, key=str)
    index = {v: k for k, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for u in units:
        m = len(u)
        for a in range(m):
            for b in range(m):
                if a != b:
                    o[index[u[a]], index[u[b]]] += 1.0 / (m - 1)
    if metric == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif metric == "interval":
        x = np.asarray(values, dtype=np.float64)
        delta = (x[:, None] - x[None, :]) ** 2
    else:
        raise ValueError(f"unknown metric {metric!r}")
    n_c = o.sum(1)
    n = n_c.sum()
    d_o = float((o * delta).sum()) / n
    d_e = float((np.outer(n_c, n_c) * delta).sum()) / (n * (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


def percent_agreement(units: list[list[Any]]) -> float | None:
    """Fraction of pairs of ratings of one unit that are equal (units with < 2 values ignored)."""
    agree = total = 0
    for u in units:
        for a in range(len(u)):
            for b in range(a + 1, len(u)):
                total += 1
                agree += u[a] == u[b]
    return agree / total if total else None


# ---------------------------------------------------------------------------- results
@dataclass
class MosResults:
    """What ``sr-rate --results`` reports for one session."""

    session: int
    mode: str
    runs: list[dict]
    score: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    votes_per_run: list[int]
    n_votes: int
    raters: list[str]
    win_rate: list[float | None] = field(default_factory=list)
    wins: np.ndarray | None = None
    ties: np.ndarray | None = None
    alpha_agreement: float | None = None
    percent_agreement: float | None = None
    shared_items: int = 0
    left_rate: float | None = None
    n_boot: int = 1000
    prior: float = 0.01

    @property
    def names(self) -> list[str]:
        return [r["name"] for r in self.runs]

    def order(self) -> list[int]:
        return sorted(range(len(self.runs)), key=lambda k: -self.score[k])


def summarize(
    engine, sid: int, n_boot: int = 1000, seed: int = 0, prior: float = 0.01
) -> MosResults:
    """Scores, intervals, win matrix, vote counts and agreement of session ``sid``."""
    info = db.session_info(engine, sid)
    items = {it.id: it for it in db.session_items(engine, sid)}
    votes = db.session_votes(engine, sid)
    n = len(info["runs"])
    if not votes:
        raise ConfigError(
            f"session {sid} has no vote yet: rate first (sr-rate RUNS...), then --results"
        )
    raters = sorted({v.rater for v in votes})
    by_item: dict[int, list] = {}
    votes_per_run = [0] * n
    if info["mode"] == "pairwise":
        rows = []
        left_choices = left_total = 0
        for v in votes:
            it = items[v.item_id]
            a, b = it.run_a, it.run_b
            votes_per_run[a] += 1
            votes_per_run[b] += 1
            if v.choice == "same":
                rows.append((a, b, 1))
            else:
                win, lose = (a, b) if v.choice == "a" else (b, a)
                rows.append((win, lose, 0))
                if v.left_run is not None:
                    left_total += 1
                    left_choices += win == v.left_run
            by_item.setdefault(v.item_id, []).append(v.choice)
        pairs = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
        score = fit_pairs(pairs, n, prior)
        lo, hi = bootstrap(lambda d: fit_pairs(d, n, prior), pairs, n_boot, seed)
        wins, ties = win_matrices(pairs, n)
        played = wins.sum(1) + wins.sum(0) + ties.sum(1)
        win_rate = [
            float((wins[k].sum() + 0.5 * ties[k].sum()) / played[k]) if played[k] else None
            for k in range(n)
        ]
        metric = "nominal"
        left_rate = left_choices / left_total if left_total else None
    else:
        data = []
        for v in votes:
            it = items[v.item_id]
            votes_per_run[it.run_a] += 1
            data.append((it.run_a, v.rating))
            by_item.setdefault(v.item_id, []).append(int(v.rating))
        arr = np.asarray(data, dtype=np.float64)

        def means(d: np.ndarray) -> np.ndarray:
            out = np.full(n, np.nan)
            for k in range(n):
                sel = d[d[:, 0] == k, 1]
                if len(sel):
                    out[k] = sel.mean()
            return out

        score = means(arr)
        lo, hi = bootstrap(means, arr, n_boot, seed)
        wins = ties = None
        win_rate = [None] * n
        metric = "interval"
        left_rate = None
    units = list(by_item.values())
    return MosResults(
        session=sid,
        mode=info["mode"],
        runs=info["runs"],
        score=np.asarray(score),
        ci_low=np.asarray(lo),
        ci_high=np.asarray(hi),
        votes_per_run=votes_per_run,
        n_votes=len(votes),
        raters=raters,
        win_rate=win_rate,
        wins=wins,
        ties=ties,
        alpha_agreement=krippendorff_alpha(units, metric),
        percent_agreement=percent_agreement(units),
        shared_items=sum(len(u) >= 2 for u in units),
        left_rate=left_rate,
        n_boot=n_boot,
        prior=prior,
    )


def _f(x: float | None, d: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{d}f}"


def _md(text: Any) -> str:
    """A name (a run, a rater, a session id) as inert Markdown text: HTML escaped as the HTML
    report does (Markdown renderers pass raw HTML through: ``<script>`` would run), ``|``
    escaped (it would end a table cell; backslashes first, so none can undo it) and line breaks
    made spaces."""
    text = html.escape(" ".join(str(text).splitlines()), quote=True)
    return text.replace("\\", "\\\\").replace("|", "\\|")


def markdown(res: MosResults) -> str:
    """The results as Markdown: score table, win matrix, votes and agreement."""
    what = (
        "Bradley-Terry log-strength (mean 0; +1 = preferred 73% of the time)"
        if res.mode == "pairwise"
        else "mean opinion score (1 = bad ... 5 = excellent)"
    )
    lines = [
        f"# sr-rate results (session {_md(res.session)}, {_md(res.mode)})",
        "",
        f"Score: {what}; 95% bootstrap interval over {res.n_boot} resamples of the votes.",
        "",
        "| rank | run | score | 95% interval | votes |"
        + (" win rate |" if res.mode == "pairwise" else ""),
        "|---:|---|---:|---|---:|" + ("---:|" if res.mode == "pairwise" else ""),
    ]
    for rank, k in enumerate(res.order(), 1):
        line = (
            f"| {rank} | {_md(res.names[k])} | {_f(res.score[k])} | "
            f"[{_f(res.ci_low[k])}, {_f(res.ci_high[k])}] | {res.votes_per_run[k]} |"
        )
        if res.mode == "pairwise":
            line += f" {_f(res.win_rate[k])} |"
        lines.append(line)
    if res.wins is not None:
        lines += [
            "",
            "Win matrix (row preferred to column; ties in parentheses):",
            "",
            "| | " + " | ".join(_md(n) for n in res.names) + " |",
            "|---|" + "---:|" * len(res.names),
        ]
        for i, name in enumerate(res.names):
            cells = [
                "–" if i == j else f"{int(res.wins[i, j])} ({int(res.ties[i, j])})"
                for j in range(len(res.names))
            ]
            lines.append(f"| {_md(name)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Votes: {res.n_votes} from {len(res.raters)} rater(s) "
        f"({', '.join(_md(r) for r in res.raters)}).",
        f"Agreement between raters: Krippendorff's alpha {_f(res.alpha_agreement)}, "
        f"raw agreement {_f(res.percent_agreement)} over {res.shared_items} item(s) rated by "
        "two raters or more.",
    ]
    if res.left_rate is not None:
        lines.append(
            f"Position check: the left image won {100 * res.left_rate:.1f}% of non-tie votes "
            "(50% expected without position bias)."
        )
    return "\n".join(lines) + "\n"


MOS_COLUMNS = ["run", "checkpoint", "mode", "score", "ci_low", "ci_high", "votes", "win_rate"]


def write_csv(res: MosResults, path: Path) -> None:
    from sr_cli.serialization import atomic_write_text

    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(MOS_COLUMNS)
    for k in res.order():
        w.writerow(
            [
                res.names[k],
                res.runs[k]["checkpoint"],
                res.mode,
                _f(res.score[k], 4),
                _f(res.ci_low[k], 4),
                _f(res.ci_high[k], 4),
                res.votes_per_run[k],
                _f(res.win_rate[k], 4) if res.win_rate[k] is not None else "",
            ]
        )
    atomic_write_text(path, f.getvalue())


#: The files ``sr-rate --results`` writes into its output folder.
RESULT_FILES = ("mos.csv", "mos.md")


def check_results_destination(out_dir: Path, what: str = "-o") -> None:
    """Before the scores are fitted: ``out_dir`` can be written and its result files are new
    or regular files (never a FIFO, a device or a folder)."""
    from sr_cli.serialization import check_output_dir, check_output_file

    check_output_dir(out_dir, what)
    for name in RESULT_FILES:
        check_output_file(out_dir / name, what, folder=False)


def write_results(res: MosResults, out_dir: Path) -> tuple[Path, Path]:
    from sr_cli.serialization import atomic_write_text

    check_results_destination(out_dir)
    csv_path, md_path = (out_dir / name for name in RESULT_FILES)
    write_csv(res, csv_path)
    atomic_write_text(md_path, markdown(res))
    return csv_path, md_path


def mos_cell(scores: dict[str, dict[str, str]], checkpoint: str | None, name: str) -> str:
    """A ``<td>`` with the score and interval of a run (by checkpoint path, else name)."""
    row = scores.get(checkpoint or "") or scores.get(name)
    try:
        value, lo, hi = (float(row[k]) for k in ("score", "ci_low", "ci_high"))  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return "<td>–</td>"
    return f"<td>{value:.2f} <small>[{lo:.2f}, {hi:.2f}]</small></td>"


def read_mos_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """``{run name: row, checkpoint path: row}`` of a ``mos.csv`` (for sr-report's column)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--mos {str(path)!r} does not exist: run sr-rate --results first")
    out: dict[str, dict[str, str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if "run" not in row or "score" not in row:
                raise ConfigError(f"--mos {str(path)!r} is not a mos.csv written by sr-rate")
            out[row["run"]] = row
            out[row.get("checkpoint") or row["run"]] = row
    return out


def log_to_wandb(res: MosResults, out_dir: Path, project: str = "sr-cli") -> str | None:
    """The score table and per-run summaries to wandb (offline unless WANDB_MODE says
    otherwise). Returns the run's folder, or ``None`` when logging failed (a warning)."""
    try:
        from sr_cli.environment import setup_environment

        setup_environment()  # WANDB_MODE=offline unless configured, never a login prompt
        import wandb

        run = wandb.init(
            project=project,
            job_type="rate",
            dir=str(out_dir),
            config={"session": res.session, "mode": res.mode, "n_boot": res.n_boot},
            mode=os.environ.get("WANDB_MODE", "offline"),
        )
        table = wandb.Table(columns=["run", "score", "ci_low", "ci_high", "votes"])
        for k in res.order():
            table.add_data(
                res.names[k],
                float(res.score[k]),
                float(res.ci_low[k]),
                float(res.ci_high[k]),
                res.votes_per_run[k],
            )
        run.log({"rate/mos": table})
        for k, name in enumerate(res.names):
            run.summary[f"rate/{name}/score"] = float(res.score[k])
        run.summary["rate/votes"] = res.n_votes
        if res.alpha_agreement is not None:
            run.summary["rate/krippendorff_alpha"] = res.alpha_agreement
        folder = str(run.dir)
        run.finish()
        return folder
    except Exception as exc:  # logging must never cost the user the results
        log.warning("could not log the results to wandb: %s", exc)
        return None

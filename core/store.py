"""The run store: one SQLite file that the trainer writes and every page reads.

Three tables. `runs` holds one row per run (status, pid, progress, error, config); `metrics` holds
one row per (run, step, name) value in long form, which is what plotting and overlaying want;
`sweeps` holds one row per hyperparameter sweep (its spec and driver process), whose trials are
ordinary runs that name it (`runs.sweep_id`, `runs.trial`).
WAL mode lets a trainer write while several browser sessions read, without blocking each other.
"""

from __future__ import annotations

import math
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.workspace import runs_dir, workspace_root

# "pruned": a sweep's trial its driver stopped early because its evaluations trailed the other trials'.
STATUSES = ("queued", "running", "completed", "failed", "cancelled", "pruned")
SWEEP_STATUSES = ("running", "completed", "failed", "cancelled")
# The first words of the error a reader records for a trainer that vanished without reporting.
LOST_REASON = "The trainer process stopped without reporting"
FINISHED = ("completed", "failed", "cancelled", "pruned")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    device TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    pid INTEGER,
    pid_started_at REAL,
    step INTEGER NOT NULL DEFAULT 0,
    max_steps INTEGER NOT NULL DEFAULT 0,
    train_started_at REAL,
    train_start_step INTEGER NOT NULL DEFAULT 0,
    progress_at REAL,
    error TEXT,
    resume INTEGER NOT NULL DEFAULT 0,
    config TEXT NOT NULL,
    pid_ticks INTEGER,
    heartbeat_at REAL,
    warning TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    recorded_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_by_run ON metrics (run_id, name, step);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    pid INTEGER,
    pid_ticks INTEGER,
    error TEXT,
    spec TEXT NOT NULL
);
"""
# Columns added after the first release: (name, SQL type) appended to older stores when they open.
_ADDED_COLUMNS = (
    ("pid_ticks", "INTEGER"),
    ("heartbeat_at", "REAL"),
    ("warning", "TEXT"),
    ("sweep_id", "TEXT"),
    ("trial", "INTEGER"),
    ("slots", "INTEGER"),
    ("gpus", "TEXT"),
)


class StoreError(UserError):
    """The run store cannot be written (read-only, full disk, locked): nothing was changed."""


@dataclass
class Run:
    id: str
    name: str
    task: str
    model: str
    dataset: str
    device: str
    status: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    pid: int | None
    pid_started_at: float | None
    step: int
    max_steps: int
    train_started_at: float | None
    train_start_step: int
    progress_at: float | None
    error: str | None
    resume: int
    config: str
    # The trainer's start in clock ticks since boot: an identity that survives wall-clock jumps.
    pid_ticks: int | None = None
    # The trainer's last sign of life (a step, an evaluation batch, a save).
    heartbeat_at: float | None = None
    # Something the user should know about a run that did not fail (a diverging loss, chance-level accuracy).
    warning: str | None = None
    # The sweep this run is a trial of, and its trial number there (None for a run queued by hand).
    sweep_id: str | None = None
    trial: int | None = None
    # How many of its device's slots the run takes: its processes (1 in stores written before runs could span devices).
    slots: int | None = None
    # The GPUs a running cuda run holds, as CUDA_VISIBLE_DEVICES takes them ("0,1"); None elsewhere.
    gpus: str | None = None

    @property
    def directory(self) -> Path:
        return run_directory(self.id)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.max_steps) if self.max_steps else 0.0

    def seconds_per_step(self) -> float | None:
        """The pace of the steps done since this (re)start, up to the last progress report."""
        done = self.step - self.train_start_step
        if not self.train_started_at or not self.progress_at or done <= 0:
            return None
        return (self.progress_at - self.train_started_at) / done

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left at the pace since this (re)start; None until it is known.

        The pace is measured up to now, not to the last report, so a trainer that stops stepping
        sees its ETA grow instead of freezing at its last value.
        """
        if self.status != "running" or not self.train_started_at or not self.max_steps:
            return None
        done = self.step - self.train_start_step
        if done <= 0:
            return None
        elapsed = max(now or time.time(), self.progress_at or 0.0) - self.train_started_at
        return elapsed / done * (self.max_steps - self.step)


@dataclass
class Sweep:
    """A hyperparameter sweep: its spec (YAML, `core.sweeps.spec.SweepSpec`) and the driver process that runs it."""

    id: str
    name: str
    task: str
    status: str
    created_at: float
    finished_at: float | None
    pid: int | None
    pid_ticks: int | None
    error: str | None
    spec: str

    @property
    def finished(self) -> bool:
        return self.status != "running"


def run_directory(run_id: str) -> Path:
    return runs_dir() / run_id


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunStore:
    def __init__(self, path: Path | None = None):
        self.path = path or workspace_root() / "runs.db"
        with self._connect() as db:
            if not _has_current_schema(db):
                db.executescript(_SCHEMA)
                _add_missing_columns(db)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as error:
            raise self._sentence(error) from None
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        except sqlite3.OperationalError as error:
            raise self._sentence(error) from None
        finally:
            db.close()

    def _sentence(self, error: sqlite3.Error) -> StoreError:
        """What a storage failure means for the user, and what to do about it."""
        text = str(error).lower()
        if "readonly" in text or "read-only" in text:
            return StoreError(
                f"The run store {self.path} is read-only ({error}), so nothing was changed. Make the file and its "
                "folder writable again (or point WORKBENCH_WORKSPACE at a writable folder), then reload."
            )
        if "full" in text:
            return StoreError(f"The disk holding the run store {self.path} is full ({error}); free some space, then reload.")
        if "locked" in text:
            return StoreError(f"The run store {self.path} stayed locked by another process for 30 s ({error}); try again.")
        return StoreError(f"The run store {self.path} cannot be used ({error}); check the file and its folder.")

    def create(
        self,
        run_id: str,
        *,
        name: str,
        task: str,
        model: str,
        dataset: str,
        device: str,
        config_yaml: str,
        sweep_id: str | None = None,
        trial: int | None = None,
        slots: int = 1,
    ) -> Run:
        with self._connect() as db:
            db.execute(
                "INSERT INTO runs (id, name, task, model, dataset, device, status, created_at, config, sweep_id, trial, slots)"
                " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                (run_id, name, task, model, dataset, device, time.time(), config_yaml, sweep_id, trial, slots),
            )
        return self.get(run_id)

    def get(self, run_id: str) -> Run | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return Run(**dict(row)) if row else None

    def list(self, statuses: tuple[str, ...] = STATUSES) -> list[Run]:
        marks = ",".join("?" * len(statuses))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM runs WHERE status IN ({marks}) ORDER BY created_at DESC", statuses).fetchall()
        return [Run(**dict(row)) for row in rows]

    def update(self, run_id: str, **values) -> None:
        if not values:
            return
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._connect() as db:
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id))

    def transition(self, run_id: str, from_statuses: tuple[str, ...], **values) -> bool:
        """Update only if the run is still in one of `from_statuses`; True when it was.

        Two processes (a page and a trainer, or two pages) may race to change a run; this makes
        each change conditional on what the writer believed, so the loser sees False.
        """
        assignments = ", ".join(f"{key} = ?" for key in values)
        marks = ",".join("?" * len(from_statuses))
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE runs SET {assignments} WHERE id = ? AND status IN ({marks})",
                (*values.values(), run_id, *from_statuses),
            )
            return cursor.rowcount == 1

    def claim_next(
        self, device: str, slots: int, place: Callable[[list[str | None], int], str | None] | None = None
    ) -> Run | None:
        """Atomically move the oldest queued run on `device` to running when the slots it takes fit in the `slots`
        there are beside the running runs' (a run taking more than there are runs alone, once nothing else runs).
        `place(held, wanted)` picks its GPUs from the lists the running runs hold, or says None: wait."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                running = db.execute("SELECT slots, gpus FROM runs WHERE device = ? AND status = 'running'", (device,)).fetchall()
                used = sum(row["slots"] or 1 for row in running)
                row = db.execute(
                    "SELECT id, slots FROM runs WHERE device = ? AND status = 'queued' ORDER BY created_at LIMIT 1", (device,)
                ).fetchone()
                wanted = (row["slots"] or 1) if row else 0
                if row and used and used + wanted > slots:
                    row = None
                gpus = place([held["gpus"] for held in running], wanted) if row and place else None
                if row and place and gpus is None:
                    row = None
                if row:
                    db.execute(
                        "UPDATE runs SET status = 'running', started_at = ?, pid = NULL, pid_ticks = NULL, heartbeat_at = NULL,"
                        " error = NULL, warning = NULL, finished_at = NULL, gpus = ? WHERE id = ?",
                        (time.time(), gpus, row["id"]),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return self.get(row["id"]) if row else None

    def queued_devices(self) -> list[str]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT DISTINCT device FROM runs WHERE status = 'queued'")]

    def log_metrics(self, run_id: str, step: int, values: Mapping[str, float]) -> None:
        """Record values at a step; a value logged again at the same step replaces the old one.

        Non-finite values are left out: SQLite stores NaN as NULL, and a curve cannot draw them
        anyway (the trainer's loss-health check says in words when the loss stops being finite).
        """
        now = time.time()
        rows = [(run_id, step, name, float(value), now) for name, value in values.items() if math.isfinite(value)]
        if not rows:
            return
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM metrics WHERE run_id = ? AND step = ? AND name = ?", [row[:3] for row in rows])
            db.executemany("INSERT INTO metrics (run_id, step, name, value, recorded_at) VALUES (?, ?, ?, ?, ?)", rows)
            db.execute("COMMIT")

    def metrics(self, run_ids: list[str] | str):
        """Long-form metrics (run_id, step, name, value, recorded_at) as a pandas DataFrame."""
        import pandas as pd

        ids = [run_ids] if isinstance(run_ids, str) else list(run_ids)
        marks = ",".join("?" * len(ids)) or "NULL"
        with self._connect() as db:
            rows = db.execute(
                f"SELECT run_id, step, name, value, recorded_at FROM metrics WHERE run_id IN ({marks})"
                " ORDER BY run_id, name, step, recorded_at",
                ids,
            ).fetchall()
        return pd.DataFrame([dict(r) for r in rows], columns=["run_id", "step", "name", "value", "recorded_at"])

    def forget_metrics_after(self, run_id: str, step: int) -> None:
        """On resume, metrics logged after the checkpoint will be logged again: drop the old ones."""
        with self._connect() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, step))

    def finish(self, run_id: str, pid: int, **values) -> bool:
        """A trainer records its own ending: from running, or from the failure a reader wrongly declared
        while this very trainer (same pid, not resumed since) was still alive; True when recorded."""
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._connect() as db:
            cursor = db.execute(
                f"UPDATE runs SET {assignments} WHERE id = ? AND (status = 'running'"
                " OR (status = 'failed' AND pid = ? AND error LIKE ?))",
                (*values.values(), run_id, pid, LOST_REASON + "%"),
            )
            return cursor.rowcount == 1

    def trials(self, sweep_id: str) -> list[Run]:
        """The runs of one sweep, in trial order."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs WHERE sweep_id = ? ORDER BY trial, created_at", (sweep_id,)).fetchall()
        return [Run(**dict(row)) for row in rows]

    def create_sweep(self, sweep_id: str, *, name: str, task: str, spec_yaml: str) -> Sweep:
        with self._connect() as db:
            db.execute(
                "INSERT INTO sweeps (id, name, task, status, created_at, spec) VALUES (?, ?, ?, 'running', ?, ?)",
                (sweep_id, name, task, time.time(), spec_yaml),
            )
        return self.sweep(sweep_id)

    def sweep(self, sweep_id: str) -> Sweep | None:
        with self._connect() as db:
            row = db.execute("SELECT * FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return Sweep(**dict(row)) if row else None

    def sweeps(self, statuses: tuple[str, ...] = SWEEP_STATUSES) -> list[Sweep]:
        marks = ",".join("?" * len(statuses))
        with self._connect() as db:
            rows = db.execute(f"SELECT * FROM sweeps WHERE status IN ({marks}) ORDER BY created_at DESC", statuses).fetchall()
        return [Sweep(**dict(row)) for row in rows]

    def update_sweep(self, sweep_id: str, **values) -> None:
        assignments = ", ".join(f"{key} = ?" for key in values)
        with self._connect() as db:
            db.execute(f"UPDATE sweeps SET {assignments} WHERE id = ?", (*values.values(), sweep_id))

    def end_sweep(self, sweep_id: str, status: str, error: str | None = None) -> bool:
        """A running sweep's ending (completed, failed or cancelled); True when this call recorded it."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE sweeps SET status = ?, error = ?, finished_at = ? WHERE id = ? AND status = 'running'",
                (status, error, time.time(), sweep_id),
            )
            return cursor.rowcount == 1

    def delete(self, run_id: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))


def _has_current_schema(db: sqlite3.Connection) -> bool:
    """True when nothing needs creating, so a read-only store can still be opened and read."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not {"runs", "metrics", "sweeps"} <= tables:
        return False
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    return all(name in columns for name, _ in _ADDED_COLUMNS)


def _add_missing_columns(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
    for name, kind in _ADDED_COLUMNS:
        if name not in columns:
            db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

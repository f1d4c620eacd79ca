"""SQLite state through sqlite-utils: schema migrations, atomic writes, one database thread.

Every call runs on a single dedicated thread, so the event loop never blocks on SQLite and the
connection is only ever used by the thread that opened it. Services ``await`` the public methods.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils
from sqlite_utils.db import jsonify_if_needed
from sqlite_utils.migrations import Migrations

from .errors import DatabaseFull, NotFound
from .models import JSON_FIELDS

P = ParamSpec("P")
T = TypeVar("T")

migrations = Migrations("pirus")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: ids of deleted pipelines/runs are never reused (they name folders and URLs).
    db.execute(
        """CREATE TABLE pipelines (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL, description TEXT, version TEXT, pirus_api TEXT, license TEXT,
            developers TEXT, size INTEGER NOT NULL DEFAULT 0,
            upload_offset INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, error TEXT,
            created TEXT NOT NULL, documents TEXT, limits TEXT, manifest TEXT,
            pipeline_file TEXT, root_path TEXT, lxd_alias TEXT, fingerprint TEXT,
            lxd_inputs_path TEXT, lxd_outputs_path TEXT, lxd_logs_path TEXT, lxd_db_path TEXT,
            lxd_run_cmd TEXT, form_file TEXT, icon_file TEXT, upload_id TEXT)"""
    )
    db.execute(
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            pipeline_id INTEGER NOT NULL, pipeline_name TEXT, pipeline_version TEXT,
            pipeline_fingerprint TEXT,
            name TEXT NOT NULL, config TEXT NOT NULL, inputs TEXT NOT NULL,
            outputs TEXT NOT NULL DEFAULT '[]', start TEXT, "end" TEXT, status TEXT NOT NULL,
            progress TEXT, exit_code INTEGER, error TEXT, created TEXT NOT NULL, metrics TEXT,
            timings TEXT, lxd_container TEXT, root_path TEXT, notify_token TEXT)"""
    )
    db["runs"].create_index(["status"])
    db["runs"].create_index(["pipeline_id"])
    db.execute(
        """CREATE TABLE files (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT,
            source TEXT NOT NULL, run_id INTEGER REFERENCES runs(id), created TEXT NOT NULL)"""
    )
    db["files"].create_index(["run_id"])
    db["files"].create_index(["path"])
    db["uploads"].create(
        {
            "id": str, "kind": str, "filename": str, "metadata": str, "length": int,
            "offset": int, "status": str, "created": str, "expires": str, "concat": str,
            "parts": str, "sha256_state": str, "file_id": int, "pipeline_id": int,
            "error": str,
        },
        pk="id",
        not_null={"id", "offset", "status", "created"},
        defaults={"offset": 0},
    )


@migrations()
def m002_run_placement(db: sqlite_utils.Database) -> None:
    # Where a run is placed in an LXD cluster (member), the member asked for at creation,
    # how its data reaches the container ("mounts" or "push"), the limits it holds there and
    # the members it could not use (attempts: member, container left behind, error).
    for column in ("location", "target", "transfer", "limits", "attempts"):
        if column not in db["runs"].columns_dict:
            db["runs"].add_column(column, str)


@migrations()
def m003_runs_pipeline_status(db: sqlite_utils.Database) -> None:
    # GET /runs?pipeline_id=&status= counts its matches: without this index, SQLite reads
    # every run of the pipeline from the table (2 ms at 10,000 runs; 20 us with it).
    db["runs"].create_index(["pipeline_id", "status"])


@migrations()
def m004_run_log_identity(db: sqlite_utils.Database) -> None:
    # The (device, inode) of each log when its run folder was made: a log deleted or swapped
    # for another file by the pipeline (whose output then goes where no cap sees it) is a
    # broken rule, also after a server restart.
    if "log_identity" not in db["runs"].columns_dict:
        db["runs"].add_column("log_identity", str)


@migrations()
def m005_run_task(db: sqlite_utils.Database) -> None:
    # Runs made by another front end than Pirus's own (``origin``: "tes" for GA4GH TES tasks):
    # the shell command that replaces the pipeline's ``run``, container limits of the run's
    # own (TES resources), host folders shared read-write at the same path (TES shared
    # folders) and that front end's own fields (a TES task's document and state).
    for column in ("origin", "command", "run_limits", "mounts", "task"):
        if column not in db["runs"].columns_dict:
            db["runs"].add_column(column, str)
    db["runs"].create_index(["origin"])


@migrations()
def m006_reuse(db: sqlite_utils.Database) -> None:
    # Reuse of identical runs (runs/reuse.py): the key of what a run computed and what it is
    # made of (to say why a later run missed it), the run whose outputs a reused run took,
    # and why a run asked to reuse did not. An upload may become an existing identical file.
    for column in ("reuse_key", "reuse_basis", "reuse_miss"):
        if column not in db["runs"].columns_dict:
            db["runs"].add_column(column, str)
    if "reused_from" not in db["runs"].columns_dict:
        db["runs"].add_column("reused_from", int)
    if "deduplicated" not in db["uploads"].columns_dict:
        db["uploads"].add_column("deduplicated", int)
    db["runs"].create_index(["reuse_key", "status"], if_not_exists=True)
    # Lineage and identical uploads look files up by content.
    db["files"].create_index(["sha256"], if_not_exists=True)


@migrations()
def m007_scale(db: sqlite_utils.Database) -> None:
    # Lists at 100,000 rows (docs/benchmarks.md, "Scale"). A deep page walks ids in these
    # narrow indexes instead of whole rows (45 ms at offset 90,000 of runs; 0.7 ms with it).
    db.execute("CREATE INDEX IF NOT EXISTS idx_runs_id ON runs(id)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_files_id ON files(id)")
    # Start-up looks for containers left by runs' failed attempts: few runs have any.
    db.execute("CREATE INDEX IF NOT EXISTS idx_runs_attempts ON runs(id) "
               "WHERE attempts IS NOT NULL")
    # GET /files?source=upload (the panel's uploaded files, newest first).
    db["files"].create_index(["source"], if_not_exists=True)
    # GET /uploads is newest first; start-up reconciles only the unfinished uploads.
    db.execute("CREATE INDEX IF NOT EXISTS idx_uploads_created ON uploads(created DESC, id)")
    db["uploads"].create_index(["status"], if_not_exists=True)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _is_full(e: sqlite3.OperationalError) -> bool:
    # SQLITE_FULL: "database or disk is full" (the database, its WAL or a temporary file).
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or \
        "database or disk is full" in str(e)


def _on_db_thread(fn: Callable[..., T]) -> Callable[..., Any]:
    """Make a sync Store method awaitable on the database thread; ``.sync`` keeps the original."""

    @functools.wraps(fn)
    async def wrapper(self: Store, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._guarded, fn, self, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    wrapper.sync = fn  # type: ignore[attr-defined]
    return wrapper


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in values.items()
    }


class Store:
    """The Pirus database. Rows come back as dicts with JSON columns decoded."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pirus-db")
        self._thread_id: int | None = None
        self.db: sqlite_utils.Database = self._executor.submit(self._open).result()

    def _open(self) -> sqlite_utils.Database:
        self._thread_id = threading.get_ident()
        db = sqlite_utils.Database(self.path)
        db.enable_wal()
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across process kills
        migrations.apply(db)
        return db

    def close(self) -> None:
        self._executor.submit(self.db.close).result()
        self._executor.shutdown(wait=True)

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(db, *args)`` on the database thread and wait (for scripts and tests)."""
        return self._executor.submit(self._guarded, fn, self.db, *args).result()

    def _guarded(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` on the database thread; a full disk is a 507 (DatabaseFull), never a
        500, and leaves no transaction open: the write is rolled back whole, so the database
        stays as it was, and the next write (once space is freed) starts clean."""
        try:
            return fn(*args, **kwargs)
        except sqlite3.OperationalError as e:
            if not _is_full(e):
                raise
            if self.db.conn.in_transaction:
                self.db.conn.rollback()
            raise DatabaseFull("the database's disk is full: the change was not saved; try again "
                               "once space is freed") from e

    # -- generic row access -------------------------------------------------------------
    # Hot paths (a run's monitor reads its row 4 times a second, every progress report is a
    # read and a write) use plain SQL: sqlite-utils' rows_where() and update() look up the
    # table list and its columns on every call, several times the cost of the query itself.
    # Table names are the module's own constants, never input.
    def _rows(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        """Rows as dicts, the JSON columns (``models.JSON_FIELDS``) decoded: which columns are
        JSON is worked out once per query, not once per row (a page of 200 runs spent more
        time there than in SQLite)."""
        cursor = self.db.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        json_at = [i for i, column in enumerate(columns) if column in JSON_FIELDS]
        out = []
        for row in cursor:
            values = list(row)
            for i in json_at:
                if isinstance(values[i], str):
                    values[i] = json.loads(values[i])
            out.append(dict(zip(columns, values, strict=True)))
        return out

    def _get(self, table: str, row_id: Any) -> dict[str, Any]:
        if isinstance(row_id, int) and not -(2**63) <= row_id < 2**63:
            raise NotFound(f"no {table[:-1]} with id {row_id!r}")  # beyond SQLite integers
        rows = self._rows(f"SELECT * FROM [{table}] WHERE id = ?", [row_id])
        if not rows:
            raise NotFound(f"no {table[:-1]} with id {row_id!r}")
        return rows[0]

    def _set(self, table: str, row_id: Any, values: dict[str, Any]) -> int:
        """UPDATE one row by id; the number of rows changed (0: no such row)."""
        if not values:
            return 1 if self._rows(f"SELECT id FROM [{table}] WHERE id = ?", [row_id]) else 0
        encoded = _encode(values)
        sets = ", ".join(f"[{column}] = ?" for column in encoded)
        params = [jsonify_if_needed(v) for v in encoded.values()]
        return self.db.execute(f"UPDATE [{table}] SET {sets} WHERE id = ?",
                               [*params, row_id]).rowcount

    @_on_db_thread
    def get(self, table: str, row_id: Any) -> dict[str, Any]:
        return self._get(table, row_id)

    @_on_db_thread
    def insert(self, table: str, values: dict[str, Any],
               then: Callable[[dict[str, Any]], dict[str, Any]] | None = None
               ) -> dict[str, Any]:
        """Insert a row; ``then(row)``: values that depend on the new row (its id), set in the
        same transaction, so a failed write never leaves the row half made."""
        with self.db.atomic():
            tbl = self.db[table]
            tbl.insert(_encode(values))
            row_id = values.get("id", tbl.last_pk)
            if then is not None:
                self._set(table, row_id, then(self._get(table, row_id)))
            return self._get(table, row_id)

    @_on_db_thread
    def update(self, table: str, row_id: Any, values: dict[str, Any]) -> dict[str, Any]:
        with self.db.atomic():
            if (isinstance(row_id, int) and not -(2**63) <= row_id < 2**63) or \
                    not self._set(table, row_id, values):
                raise NotFound(f"no {table[:-1]} with id {row_id!r}")
            return self._get(table, row_id)

    @_on_db_thread
    def update_where_status(
        self, table: str, row_id: Any, expected: list[str], values: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Compare-and-set: update only if the row's status is one of ``expected``."""
        with self.db.atomic():
            row = self._get(table, row_id)
            if row["status"] not in expected:
                return None
            self._set(table, row_id, values)
            return self._get(table, row_id)

    @_on_db_thread
    def set_each(self, table: str, column: str, values: dict[Any, Any],
                 unless_status: list[str]) -> None:
        """``column`` of several rows (id -> value) in one transaction, skipping rows gone or
        whose status is in ``unless_status`` (coalesced progress: runs/core.py)."""
        marks = ",".join("?" * len(unless_status))
        with self.db.atomic():
            self.db.conn.executemany(
                f"UPDATE [{table}] SET [{column}] = ? WHERE id = ? AND status NOT IN ({marks})",
                [[json.dumps(v) if isinstance(v, (dict, list)) else v, row_id, *unless_status]
                 for row_id, v in values.items()])

    @_on_db_thread
    def delete(self, table: str, row_id: Any) -> None:
        with self.db.atomic():
            self._get(table, row_id)
            self.db[table].delete(row_id)

    @_on_db_thread
    def select(
        self,
        table: str,
        where: str | None = None,
        params: list[Any] | None = None,
        order_by: str = "id",
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[dict[str, Any]]:
        sql = f"SELECT * FROM [{table}]" + (f" WHERE {where}" if where else "")
        sql += f" ORDER BY {order_by}" if order_by else ""
        if limit is not None or offset is not None:
            sql += f" LIMIT {int(limit if limit is not None else -1)}"
            sql += f" OFFSET {int(offset)}" if offset else ""
        return self._rows(sql, params or [])

    @_on_db_thread
    def page(self, table: str, where: str | None, params: list[Any], *, descending: bool,
             limit: int, offset: int = 0, after: int | None = None,
             columns: tuple[str, ...] | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of rows by id (``descending``: newest first) and the count of every match.
        ``after``: only ids past this one in that order (a cursor: the last id of the
        previous page), which costs what the first page costs; ``offset`` skips more.

        The ids of the page are picked first, from an index where the filter has one, and
        only the page's rows are read: skipping 90,000 whole rows was most of a deep page.
        Rows and count come from one call on the database thread, so no write falls between
        them. ``columns``: only these (a list needs its public fields, not every column
        decoded)."""
        order = "id DESC" if descending else "id"
        clauses = [where] if where else []
        page_params = list(params)
        if after is not None:
            clauses.append("id < ?" if descending else "id > ?")
            page_params.append(after)
        inner = f"SELECT id FROM [{table}]" + (
            f" WHERE {' AND '.join(clauses)}" if clauses else "")
        wanted = ", ".join(f"[{c}]" for c in columns) if columns else "*"
        sql = (f"SELECT {wanted} FROM [{table}] WHERE id IN ({inner} ORDER BY {order} "
               f"LIMIT {int(limit)} OFFSET {int(offset)}) ORDER BY {order}")
        rows = self._rows(sql, page_params)
        return rows, self.count.sync(self, table, where, params)

    @_on_db_thread
    def count(self, table: str, where: str | None = None, params: list[Any] | None = None) -> int:
        sql = f"SELECT COUNT(*) FROM [{table}]" + (f" WHERE {where}" if where else "")
        return int(self.db.execute(sql, params or []).fetchone()[0])

    @_on_db_thread
    def delete_run(self, run_id: int) -> None:
        """Delete a run and its output file records together."""
        with self.db.atomic():
            self._get("runs", run_id)
            self.db.execute("DELETE FROM files WHERE run_id = ?", [run_id])
            self.db["runs"].delete(run_id)

    @_on_db_thread
    def delete_file(self, file_id: int) -> None:
        """Delete a file record and drop it from its run's outputs, together."""
        with self.db.atomic():
            row = self._get("files", file_id)
            self.db["files"].delete(file_id)
            if row["run_id"] is not None:
                run = self._get("runs", row["run_id"])
                outputs = [o for o in run["outputs"] if o.get("file_id") != file_id]
                self.db["runs"].update(run["id"], {"outputs": json.dumps(outputs)})

    @_on_db_thread
    def replace_run_outputs(
        self, run_id: int, files: list[dict[str, Any]], run_values: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Register a run's output files and update the run, all or nothing (idempotent)."""
        with self.db.atomic():
            self.db.execute("DELETE FROM files WHERE run_id = ?", [run_id])
            ids = []
            table = self.db["files"]
            for f in files:
                table.insert(_encode(f))
                ids.append(table.last_pk)
            rows = [self._get("files", i) for i in ids]
            values = dict(run_values, outputs=[{"file_id": r["id"], "path": r["path"],
                                                "name": r["name"], "size": r["size"],
                                                "sha256": r["sha256"]} for r in rows])
            self.db["runs"].update(run_id, _encode(values))
            return rows

    @_on_db_thread
    def insert_run_with_outputs(
        self, values: dict[str, Any], then: Callable[[dict[str, Any]], dict[str, Any]],
        files: Callable[[dict[str, Any]], list[dict[str, Any]]],
    ) -> dict[str, Any]:
        """Insert a run already ended (a reused run) with its output file records, all or
        nothing: ``then(row)`` as for ``insert``, ``files(row)`` the records to register."""
        with self.db.atomic():
            table = self.db["runs"]
            table.insert(_encode(values))
            run_id = table.last_pk
            self._set("runs", run_id, then(self._get("runs", run_id)))
            row = self._get("runs", run_id)
            outputs = []
            file_table = self.db["files"]
            for f in files(row):
                file_table.insert(_encode(f))
                record = self._get("files", file_table.last_pk)
                outputs.append({"file_id": record["id"], "path": record["path"],
                                "name": record["name"], "size": record["size"],
                                "sha256": record["sha256"]})
            self._set("runs", run_id, {"outputs": outputs})
            return self._get("runs", run_id)

    @_on_db_thread
    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

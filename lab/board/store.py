"""The board's database: one SQLite file (WAL, full sync), its schema created on first use and
versioned with `PRAGMA user_version`.

A share is acknowledged when `Board.share` returns: its transaction is committed and, with
`synchronous=FULL`, on disk, so a server killed with SIGKILL after that still has it. Each
share carries an id chosen by the sharer (`INSERT OR IGNORE`): a retried or double-clicked
share lands once. Every operation opens its own connection, so threads (Streamlit's
sessions) and processes share the file only through SQLite's locks.
"""
from __future__ import annotations

import csv
import hmac
import io
import json
import os
import re
import sqlite3
import time
import unicodedata
import uuid
from pathlib import Path

from lab.board.stats import group_key
from lab.board.validate import Refused, check_record

SCHEMA_VERSION = 1
NICK_MAX = 24
BUSY_MS = 30_000          # 30 sessions writing at once wait for each other, never fail
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shares (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    share_id  TEXT NOT NULL UNIQUE,
    created   REAL NOT NULL,
    nickname  TEXT NOT NULL,
    owner     TEXT NOT NULL DEFAULT '',
    experiment TEXT NOT NULL,
    model     TEXT NOT NULL,
    seed      INTEGER,
    group_key TEXT NOT NULL,
    hidden    INTEGER NOT NULL DEFAULT 0,
    record    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS shares_group ON shares (group_key, id);
"""
COLUMNS = ("id", "share_id", "created", "nickname", "owner", "experiment", "model", "seed",
           "group_key", "hidden")


class NeedsCode(PermissionError):
    """An action of the teacher's without the class code (one sentence)."""


def default_path() -> Path:
    """`$LAB_BOARD`, else board.sqlite in the lab's cache folder."""
    if os.environ.get("LAB_BOARD"):
        return Path(os.environ["LAB_BOARD"])
    from lab.paths import cache_dir
    return cache_dir() / "board.sqlite"


def configured_code(root: Path | str = ".") -> str | None:
    """The class code: `$LAB_CLASS_CODE`, else `class_code` in `root/.streamlit/secrets.toml`
    (what `st.secrets` reads); None when neither is set (a laptop: no code needed)."""
    code = os.environ.get("LAB_CLASS_CODE")
    if code:
        return code
    path = Path(root) / ".streamlit" / "secrets.toml"
    if not path.is_file():
        return None
    import tomllib
    try:
        value = tomllib.loads(path.read_text(encoding="utf-8")).get("class_code")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid TOML ({e}).") from None
    return str(value) if value not in (None, "") else None


def clean_nickname(name) -> str:
    """Plain text, one line, at most NICK_MAX characters (control characters dropped)."""
    if not isinstance(name, str):
        raise Refused("a nickname must be text.")
    text = "".join(" " if ch.isspace() else ch for ch in name
                   if ch.isspace() or not unicodedata.category(ch).startswith("C"))
    text = " ".join(text.split())[:NICK_MAX].strip()
    if not text:
        raise Refused(f"pick a nickname (1 to {NICK_MAX} characters) before sharing.")
    return text


class Board:
    """The class board in one SQLite file; `class_code` guards clear, hide and export."""

    def __init__(self, path: Path | str | None = None, class_code: str | None = None):
        self.path = Path(path) if path is not None else default_path()
        self.class_code = class_code or None
        self._ready = False

    # ------------------------------------------------------------ the file
    def _connect(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise ValueError(f"the board's file {self.path} is a folder.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            conn.execute("PRAGMA synchronous=FULL")     # a committed share is on disk
            if not self._ready:
                self._create(conn)
        except sqlite3.OperationalError as e:
            conn.close()
            raise ValueError(f"the board's file {self.path} could not be opened ({e}).") from None
        except sqlite3.DatabaseError as e:
            conn.close()
            raise ValueError(f"the board's file {self.path} is not a board database ({e}).") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        """WAL and the schema, once per file; a newer schema than this lab's is refused."""
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise ValueError(f"the board's file {self.path} cannot use WAL journaling.")
        conn.execute("BEGIN IMMEDIATE")        # one process creates; the others wait
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(f"the board's file {self.path} has schema {version}, newer than "
                             f"this lab's {SCHEMA_VERSION}: update the lab.")
        if version < SCHEMA_VERSION:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)         # not executescript: it would COMMIT first
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        conn.execute("COMMIT")
        self._ready = True

    def schema_version(self) -> int:
        with _closing(self._connect()) as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # ------------------------------------------------------------ students
    def share(self, record, nickname, share_id: str | None = None, owner: str = "") -> tuple[str, bool]:
        """Store a checked record under a cleaned nickname: (share id, whether it is new)."""
        rec = check_record(record)
        nick = clean_nickname(nickname)
        sid = share_id or uuid.uuid4().hex
        if not isinstance(sid, str) or not _ID.match(sid):
            raise Refused("a share id is 1 to 64 letters, digits, '-' or '_'.")
        row = (sid, time.time(), nick, str(owner)[:64], rec["experiment"], rec["model"],
               rec["seed"], group_key(rec), json.dumps(rec, separators=(",", ":")))
        with _closing(self._connect()) as conn:
            cur = conn.execute("INSERT OR IGNORE INTO shares (share_id, created, nickname, owner, "
                               "experiment, model, seed, group_key, record) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            return sid, cur.rowcount == 1

    def rows(self, hidden: bool = False, records: bool = True) -> list[dict]:
        """The shares in the order they arrived (hidden ones too when `hidden`)."""
        cols = ", ".join(COLUMNS + (("record",) if records else ()))
        where = "" if hidden else " WHERE hidden = 0"
        with _closing(self._connect()) as conn:
            cur = conn.execute(f"SELECT {cols} FROM shares{where} ORDER BY id")
            out = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
        for r in out:
            if records:
                r["record"] = json.loads(r["record"])
        return out

    def signature(self) -> tuple:
        """Changes whenever a share arrives, is hidden or the board is cleared (cheap)."""
        with _closing(self._connect()) as conn:
            return tuple(conn.execute("SELECT count(*), coalesce(max(id), 0), "
                                      "coalesce(sum(hidden), 0) FROM shares").fetchone())

    def hide(self, share_id: str, code: str | None = None, owner: str | None = None,
             hidden: bool = True) -> None:
        """Hide (or show again) a share: the teacher's, or the sharer's own."""
        with _closing(self._connect()) as conn:
            row = conn.execute("SELECT owner FROM shares WHERE share_id = ?", (share_id,)).fetchone()
            if row is None:
                raise Refused(f"there is no share {share_id!r} on the board.")
            if not (owner and row[0] == owner):
                self.check_code(code, "hiding another student's share")
            conn.execute("UPDATE shares SET hidden = ? WHERE share_id = ?", (int(hidden), share_id))

    def clear(self, code: str | None = None) -> int:
        """Remove every share; how many there were."""
        self.check_code(code, "clearing the board")
        with _closing(self._connect()) as conn:
            return conn.execute("DELETE FROM shares").rowcount

    # ------------------------------------------------------------ export
    def export(self, fmt: str, code: str | None = None) -> str:
        """The whole board (hidden shares marked) as "csv" or "json" text."""
        self.check_code(code, "exporting the board")
        if fmt not in ("csv", "json"):
            raise ValueError(f"export as csv or json, not {fmt!r}.")
        rows = self.rows(hidden=True)
        return to_json(rows) if fmt == "json" else to_csv(rows)

    def check_code(self, code: str | None, action: str) -> None:
        """NeedsCode unless no code is configured (one user) or `code` is the class's."""
        if self.class_code is None:
            return
        if not code:
            raise NeedsCode(f"{action} needs the class code.")
        if not hmac.compare_digest(str(code).encode(), self.class_code.encode()):
            raise NeedsCode(f"that is not the class code, so {action} is refused.")


def to_json(rows: list[dict]) -> str:
    return json.dumps({"schema": SCHEMA_VERSION, "shares": rows}, indent=1)


def to_csv(rows: list[dict]) -> str:
    """One line per share: who, what, the headline numbers, and the whole record as JSON."""
    from lab.board.stats import headline
    buf = io.StringIO()
    names = [c for c in COLUMNS if c != "group_key"] + ["settings", "headline", "record"]
    w = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "settings": r["group_key"], "headline": headline(r["record"]),
                    "record": json.dumps(r["record"], separators=(",", ":"))})
    return buf.getvalue()


class _closing:
    """`with`: the connection closed at the end (sqlite3's own `with` only commits)."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()

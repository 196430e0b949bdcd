"""The class board: the store survives SIGKILL and 30 sharers at once, crafted records and
nicknames are refused or made plain, the teacher's actions need the class code, and the
statistics say what the shares show."""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from lab.board import (NICK_MAX, SCHEMA_VERSION, Board, NeedsCode, Refused, agreement,
                       check_record, clean_nickname, configured_code, groups, sae_agreement,
                       share_record)
from lab.board.stats import Group, feature_sentence
from lab.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
CRAFTY = "**bold** <script>alert(1)</script> [x](http://e.vil) " + "z" * 10_000


@pytest.fixture(scope="module")
def runs(tiny, one_thread):
    """Real results of tiny-gpt2's smoke configs: actmax seeds 0..3, sae seeds 0..1, feature."""
    from lab import registry
    out = {}
    for name, seeds in (("actmax", range(4)), ("sae", range(2)), ("feature", range(1))):
        exp = registry.get(name)
        out[name] = [exp.run(tiny, dataclasses.replace(exp.smoke_config(), seed=s)) for s in seeds]
    return out


@pytest.fixture(scope="module")
def records(runs):
    return {name: [share_record(r) for r in results] for name, results in runs.items()}


@pytest.fixture
def db(tmp_path):
    return tmp_path / "board.sqlite"


# ---------------------------------------------------------------- the file

def test_schema_created_on_first_use_versioned_and_wal(db):
    assert not db.exists()
    assert Board(db).schema_version() == SCHEMA_VERSION
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master")} >= {"shares"}


def test_newer_schema_and_foreign_file_refused_in_one_sentence(tmp_path):
    newer = tmp_path / "newer.sqlite"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not a database at all" * 100)
    for path, words in ((newer, "newer than this lab"), (junk, "not a board database")):
        with pytest.raises(ValueError) as e:
            Board(path).rows()
        assert words in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- sharing and grouping

def test_shares_round_trip_and_group_by_settings_but_seed(db, records):
    board = Board(db)
    for i, rec in enumerate(records["actmax"]):
        assert board.share(rec, f"student {i}")[1] is True
    other = copy.deepcopy(records["actmax"][0])
    other["config"]["index"] = 6                 # another target: another group
    board.share(other, "elsewhere")
    rows = board.rows()
    assert [r["record"] for r in rows[:4]] == json.loads(json.dumps(records["actmax"]))
    by_size = sorted(groups(rows), key=lambda g: len(g.shares))
    assert [len(g.shares) for g in by_size] == [1, 4]
    assert by_size[1].seeds == [0, 1, 2, 3]


def test_same_share_id_lands_once(db, records):
    board = Board(db)
    first = board.share(records["actmax"][0], "ana", share_id="abc")
    again = board.share(records["actmax"][0], "ana", share_id="abc")
    assert first == ("abc", True) and again == ("abc", False) and len(board.rows()) == 1


# ---------------------------------------------------------------- statistics

def _group(vectors: np.ndarray) -> Group:
    shares = [{"id": i, "share_id": str(i), "nickname": f"s{i}", "seed": i,
               "record": {"vectors": v[None].tolist()}} for i, v in enumerate(vectors)]
    return Group("k", "actmax", "m", {}, shares)


def test_identical_optima_all_agree_random_ones_do_not():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((5, 64))
    same = np.stack([base + 0.01 * rng.standard_normal((5, 64)) for _ in range(8)])
    a = agreement(_group(same))
    assert (a.above, a.pairs) == (28, 28)
    assert a.sentence().startswith("8 optima from 8 seeds: 28 of 28 pairs more alike than random")
    b = agreement(_group(rng.standard_normal((12, 5, 64))))
    assert b.pairs == 66 and b.above <= 12          # ~5% by construction; 12 is p < 1e-3
    assert 0.05 < b.threshold < 0.2                 # a 320-dim Gaussian's 95th pct is ~0.09
    assert b.null_cosine.shape == (12, 12)


def test_real_shares_agreement_sentence(db, records):
    board = Board(db)
    for i, rec in enumerate(records["actmax"]):
        board.share(rec, f"s{i}")
    (g,) = groups(board.rows())
    a = agreement(g)
    assert a.sentence().startswith(f"4 optima from 4 seeds: {a.above} of 6 pairs")
    v = np.asarray([r["vectors"][0] for r in records["actmax"]]).reshape(4, -1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert np.allclose(a.cosine, v @ v.T)
    from lab.charts import board as charts
    checked = charts.agreement_charts(a.cosine, a.null_cosine, a.labels).to_dict()  # validated
    assert charts.agreement_spec(a.cosine, a.null_cosine, a.labels) == checked
    (left, right) = checked["hconcat"]
    cells = checked["datasets"][left["data"]["name"]]
    assert len(cells) == 12 and {c["cosine"] for c in cells} == {float(a.cosine[i, j])
                                                                  for i in range(4) for j in range(4) if i != j}


def test_sae_agreement_finds_a_shared_direction(db, records):
    board = Board(db)
    board.share(records["sae"][0], "a")
    board.share(records["sae"][0], "a twin")       # the same SAE twice: its best latent matches
    board.share(records["sae"][1], "b")
    (g,) = groups(board.rows())
    a = sae_agreement(g)
    assert a.matches >= 1 and a.pairs == 3
    assert a.rows[0]["max cosine elsewhere"] == pytest.approx(1.0, abs=1e-4)
    assert a.rows[0]["best latent"] == records["sae"][0]["best_latent"]
    assert "3 SAEs from 2 seeds:" in a.sentence()


def test_feature_verdicts(db, records):
    board = Board(db)
    board.share(records["feature"][0], "f")
    (g,) = groups(board.rows())
    head = records["feature"][0]["verdict"].split(":")[0].strip()
    assert feature_sentence(g) == f"1 feature view from 1 seed(s): 1 {head!r}."


# ---------------------------------------------------------------- refusals

def _edits():
    def cfg(key, value):
        return lambda r: r["config"].__setitem__(key, value)
    return {
        "not an object": lambda r: [r],
        "unknown experiment": lambda r: r.__setitem__("experiment", "mine"),
        "not on the board": lambda r: r.__setitem__("experiment", "hidden"),
        "no config": lambda r: r.pop("config"),
        "seed as text": lambda r: r.__setitem__("seed", "0"),
        "seed edited": lambda r: r.__setitem__("seed", 7),
        "extra config key": cfg("backdoor", 1),
        "lr out of bounds": cfg("lr", 5.0),
        "bool for int": cfg("index", True),
        "no vectors": lambda r: r.pop("vectors"),
        "vectors shape": lambda r: r["vectors"][0].pop(),
        "vector nan": lambda r: r["vectors"][0][0].__setitem__(0, float("nan")),
        "final as text": lambda r: r["restarts"][0].__setitem__("final", "big"),
        "models as list": lambda r: r.__setitem__("model", ["x"]),
    }


@pytest.mark.parametrize("edit", sorted(_edits()))
def test_crafted_record_refused_in_one_sentence(db, records, edit):
    rec = copy.deepcopy(records["actmax"][0])
    out = _edits()[edit](rec)
    rec = out if isinstance(out, list) else rec
    board = Board(db)
    with pytest.raises(Refused) as e:
        board.share(rec, "mallory")
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(".") and len(msg) < 300
    assert board.rows() == []


def test_sae_record_without_decoder_refused(records):
    rec = copy.deepcopy(records["sae"][0])
    rec.pop("decoder")
    with pytest.raises(Refused, match="has no 'decoder'"):
        check_record(rec)
    assert check_record(records["feature"][0]) is records["feature"][0]


def test_cli_share_of_hand_edited_record_refused(db, records, tmp_path, capsys):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(records["actmax"][0]))
    edited = copy.deepcopy(records["actmax"][0])
    edited["restarts"][0]["final"] = 1e9            # looks fine; the config was edited too:
    edited["config"]["steps"] = 0
    bad.write_text(json.dumps(edited))
    assert cli(["board", "--share", str(bad), "--nickname", "m", "--board", str(db)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the record's config is not a valid ActMaxConfig") and "\n" not in err
    assert cli(["board", "--share", str(good), "--nickname", "m", "--board", str(db)]) == 0
    assert len(Board(db).rows()) == 1


# ---------------------------------------------------------------- nicknames

def test_nickname_cleaned_and_truncated():
    assert clean_nickname("  ana\n\t\x00bel ") == "ana bel"
    assert len(clean_nickname(CRAFTY)) == NICK_MAX
    for bad in ("", "   ", "\x00\x01", None, 5):
        with pytest.raises(Refused):
            clean_nickname(bad)


def test_crafty_nickname_stored_truncated_and_shown_as_plain_text(db, records, monkeypatch):
    from conftest import app_test
    monkeypatch.setenv("LAB_BOARD", str(db))
    Board(db).share(records["actmax"][0], CRAFTY)
    Board(db).share(records["actmax"][1], "plain")
    (row, _) = Board(db).rows()
    assert row["nickname"] == CRAFTY[:NICK_MAX].strip() and len(row["nickname"]) <= NICK_MAX
    at = app_test("views/board.py")
    assert not at.exception
    shown = at.dataframe[0].value
    assert row["nickname"] in shown["nickname"].tolist()
    drawn = [m.value for m in [*at.markdown, *at.caption, *at.subheader, *at.title]]
    assert not any("bold" in t or "script" in t for t in drawn)   # never markdown or HTML
    assert "2 shares on the board" in [c.value for c in at.caption]


SHARE_PAGE = """
import dataclasses, torch
torch.set_num_threads(1)
import streamlit as st
from lab import registry
from lab.models import load_model
from ui.share import share_button

@st.cache_resource
def result():
    exp = registry.get("actmax")
    return exp.run(load_model("tiny-gpt2", "cpu"), exp.smoke_config())

share_button(result(), "actmax")
"""


def test_share_button_once_per_session_plain_and_no_duplicates(db, monkeypatch):
    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("LAB_BOARD", str(db))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_string(SHARE_PAGE, default_timeout=120).run()
    button = at.button(key="board_share_actmax")
    assert button.disabled                              # no nickname yet
    at.text_input(key="board_nick_actmax").set_value(CRAFTY).run()
    assert [t.value for t in at.text] == [f"Sharing as {CRAFTY[:NICK_MAX].strip()}"]
    assert not at.text_input                            # picked once: no box any more
    at.button(key="board_share_actmax").click().run()
    at.button(key="board_share_actmax").click().run()  # a second click: the same share
    assert [s.value for s in at.success] == ["Already on the class board."]
    rows = Board(db).rows()
    assert len(rows) == 1 and rows[0]["nickname"] == CRAFTY[:NICK_MAX].strip()
    assert len(rows[0]["record"]["vectors"][0]) == 5    # the optimized vectors travel with it


# ---------------------------------------------------------------- the teacher's code

def test_without_the_code_clear_hide_export_refused_with_it_they_work(db, records):
    board = Board(db, class_code="s3cret")
    sid, _ = board.share(records["actmax"][0], "ana", owner="session-a")
    other, _ = board.share(records["actmax"][1], "ben", owner="session-b")
    for code in (None, "", "wrong"):
        for action in (lambda: board.clear(code), lambda: board.hide(other, code),
                       lambda: board.hide(other, code, owner="session-a"),
                       lambda: board.export("csv", code), lambda: board.export("json", code)):
            with pytest.raises(NeedsCode) as e:
                action()
            assert "class code" in str(e.value) and "\n" not in str(e.value)
    assert len(board.rows()) == 2
    board.hide(sid, owner="session-a")                # a student hides their own share
    assert [r["share_id"] for r in board.rows()] == [other]
    exported = json.loads(board.export("json", "s3cret"))
    assert [s["share_id"] for s in exported["shares"]] == [sid, other]
    assert [s["hidden"] for s in exported["shares"]] == [1, 0]
    csv_text = board.export("csv", "s3cret")
    assert csv_text.splitlines()[0].startswith("id,share_id,created,nickname")
    assert len(csv_text.splitlines()) == 3
    board.hide(other, "s3cret")
    assert board.rows() == []
    assert board.clear("s3cret") == 2 and board.rows(hidden=True) == []


def test_no_code_configured_is_a_single_users_board(db, records):
    board = Board(db)
    sid, _ = board.share(records["actmax"][0], "me")
    board.hide(sid)
    assert json.loads(board.export("json"))["shares"][0]["hidden"] == 1
    assert board.clear() == 1


def test_code_from_env_or_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv("LAB_CLASS_CODE", raising=False)
    assert configured_code(tmp_path) is None
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('class_code = "from-toml"\n')
    assert configured_code(tmp_path) == "from-toml"
    monkeypatch.setenv("LAB_CLASS_CODE", "from-env")
    assert configured_code(tmp_path) == "from-env"


def test_cli_clear_and_export_need_the_code(db, records, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_CLASS_CODE", "s3cret")
    Board(db).share(records["actmax"][0], "ana")
    out = tmp_path / "board.json"
    base = ["board", "--board", str(db)]
    assert cli(base + ["--export", str(out)]) == 2 and not out.exists()
    assert cli(base + ["--clear"]) == 2
    assert cli(base + ["--clear", "--code", "nope"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all("class code" in e for e in errors)
    assert cli(base + ["--export", str(out), "--code", "s3cret"]) == 0
    assert len(json.loads(out.read_text())["shares"]) == 1
    assert cli(base + ["--show"]) == 0
    assert "1 optimum so far" in capsys.readouterr().out
    assert cli(base + ["--clear", "--code", "s3cret"]) == 0
    assert Board(db).rows() == []


# ---------------------------------------------------------------- durability and load

SHARER = """
import json, sys
from lab.board import Board
board, record = Board(sys.argv[1]), json.load(open(sys.argv[2]))
print("ready", flush=True)
i = 0
while True:
    sid, _ = board.share(record, f"loop {i}", share_id=f"s{i}")
    print(sid, flush=True)          # acknowledged: share() returned after the commit
    i += 1
"""


def test_sigkill_mid_share_keeps_every_acknowledged_share(db, records, tmp_path):
    rec = tmp_path / "record.json"
    rec.write_text(json.dumps(records["actmax"][0]))
    proc = subprocess.Popen([sys.executable, "-c", SHARER, str(db), str(rec)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    acked = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < 40:
            acked.append(proc.stdout.readline().strip())
        os.kill(proc.pid, signal.SIGKILL)           # in the middle of the next share
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    after = Board(db)                               # the restart: a fresh process's view
    ids = {r["share_id"] for r in after.rows()}
    assert set(acked) <= ids
    assert len(ids) >= len(acked)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert after.share(records["actmax"][1], "after restart")[1]


def test_thirty_concurrent_sharers_none_lost_or_duplicated(db, records):
    n, go = 30, threading.Barrier(30)
    errors, acks = [], []

    def student(i: int) -> None:
        board = Board(db)                          # each session its own board object
        go.wait()
        try:
            rec = records["actmax"][i % 4]
            acks.append(board.share(rec, f"student {i}", share_id=f"student-{i}"))
            acks.append(board.share(rec, f"student {i}", share_id=f"student-{i}"))  # double click
        except Exception as e:   # noqa: BLE001  (any failure is the test's finding)
            errors.append(e)

    threads = [threading.Thread(target=student, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(new for _, new in acks) == [False] * n + [True] * n
    rows = Board(db).rows()
    assert len(rows) == n and {r["share_id"] for r in rows} == {f"student-{i}" for i in range(n)}
    (g,) = groups(rows)
    assert agreement(g).pairs == n * (n - 1) // 2


def test_board_page_builds_no_export_on_redraw(db, records, monkeypatch):
    """The exports are made on click: building them on each redraw of every viewer's page was
    the 10-viewer lag (~0.7 s per redraw of a 30-share board)."""
    from conftest import app_test
    monkeypatch.setenv("LAB_BOARD", str(db))
    monkeypatch.delenv("LAB_CLASS_CODE", raising=False)
    made = []
    real = Board.export
    monkeypatch.setattr(Board, "export", lambda self, *a, **k: made.append(a) or real(self, *a, **k))
    Board(db).share(records["actmax"][0], "a")
    Board(db).share(records["actmax"][1], "b")
    at = app_test("views/board.py")
    assert not at.exception and "2 shares on the board" in [c.value for c in at.caption]
    assert made == []

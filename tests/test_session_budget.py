"""One session's kept results stay under its budget: the oldest other pages' results go first,
the one just finished stays (ui.jobs.trim; the server's bound is the shared cache plus this
per session)."""
import numpy as np

from lab.sizes import nbytes
from ui.jobs import SESSION_BYTES, trim


def _state(mb: int, at: float) -> dict:
    result = np.zeros(mb << 18, dtype=np.float32)          # mb MiB
    return {"status": "done", "result": result, "bytes": nbytes(result), "at": at}


def test_oldest_results_go_first_and_the_new_one_stays():
    states = {"job:lens": _state(40, 1.0), "job:sae": _state(40, 2.0), "job:hidden": _state(1, 3.0),
              "job:actmax": _state(60, 4.0), "other": 1}
    dropped = trim(states, keep="job:actmax", budget=128 << 20)
    assert dropped == ["job:lens"]                            # 141 MiB -> 101 MiB
    assert states["job:lens"]["result"] is None and states["job:lens"]["status"] == "released"
    assert all(states[k]["result"] is not None for k in ("job:sae", "job:hidden", "job:actmax"))
    assert sum(states[k]["bytes"] for k in states if k.startswith("job:")) <= 128 << 20
    assert states["other"] == 1


def test_a_result_over_the_budget_alone_is_still_kept():
    states = {"job:a": _state(10, 1.0), "job:b": _state(200, 2.0)}
    assert trim(states, keep="job:b", budget=128 << 20) == ["job:a"]
    assert states["job:b"]["result"] is not None


def test_under_budget_nothing_goes():
    states = {"job:a": _state(10, 1.0), "job:b": _state(10, 2.0)}
    assert trim(states, keep="job:b") == [] and SESSION_BYTES >= 64 << 20
    assert states["job:a"]["result"] is not None

"""Laminar layers as Ray tasks, on a local Ray with 2 CPUs started here: the same seed gives the
same rows with and without Ray, rows stream back as layers finish, a killed Ray sweep resumes.

Needs `pip install -r requirements-ray.txt`; marked `ray`, so the default run deselects these
and CI runs them with `python -m pytest -m ray` after installing Ray.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pandas as pd
import pytest

from lab import laminar
from lab.experiment import replace_paths

pytestmark = pytest.mark.ray

TINY = laminar.preset("tiny")
ON_RAY = replace(TINY, ray="local")   # the Ray this process joined below is the one used


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _numbers(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns="seconds").reset_index(drop=True)


@pytest.mark.parametrize("changes", [
    {},                                                        # ReLU + L1, tasks with 2 threads
    {"ray_cpus": 1},                                           # two tasks at once, 1 thread each
    {"seed": 3, "layers": (0, 2), "sae.activation": "topk", "sae.k": 8},        # Top-K, sparse steps
])
def test_same_seed_same_rows_with_and_without_ray(tiny, changes):
    here = laminar.run(tiny, replace_paths(TINY, changes))
    there = laminar.run(tiny, replace_paths(ON_RAY, changes))
    pd.testing.assert_frame_equal(_numbers(there.rows), _numbers(here.rows))
    assert there.to_record()["config"]["ray"] == "local"


def test_rows_stream_back_as_layers_finish(tiny):
    seen = []
    result = laminar.run(tiny, ON_RAY, seen.append)
    sizes = [len(p.partial.rows) for p in seen]
    assert sizes == sorted(sizes) and sizes[0] == 0 and sizes[-1] == 3
    assert sorted(set(sizes)) == [0, 1, 2, 3]                  # layer by layer
    done = [p.message for p in seen if p.message.startswith("layer ")]
    assert len(done) == 3 and done[-1].endswith("3/3 layers done)")
    assert all(p.unit == "layer" and p.total == 4 for p in seen) and seen[-1].fraction == 1.0
    assert result.rows["layer"].tolist() == [0, 1, 2]          # by layer, whatever the order


def test_stop_does_not_wait_for_a_layer(tiny):
    """Between results the sweep reports every second, so a Stop lands while tasks run."""
    slow = replace_paths(ON_RAY, {"n_windows": 4, "window_len": 64, "sae.epochs": 400})
    heard = []

    def stop(p):
        if "queued or training as Ray tasks (2 CPU each)" in p.message:
            heard.append(p)
            raise KeyboardInterrupt   # what Streamlit's Stop raises in the callback

    with pytest.raises(KeyboardInterrupt):
        laminar.run(tiny, slow, stop)
    assert len(heard[0].partial.rows) == 0 and "3 layers queued" in heard[0].message


def test_killed_ray_sweep_resumes_to_the_same_rows(tiny, tmp_path):
    whole = laminar.run(tiny, TINY).rows
    folder = str(tmp_path / "run")

    class Killed(Exception):
        pass

    def kill_after_two(p):
        if len(p.partial.rows) == 2:
            raise Killed

    with pytest.raises(Killed):   # the task still in flight is cancelled
        laminar.run(tiny, replace(ON_RAY, run_dir=folder, keep_saes=True), kill_after_two)
    kept = sorted(p.name for p in (tmp_path / "run").glob("layer_*.json"))
    assert len(kept) == 2
    resumed = laminar.run(tiny, replace(ON_RAY, resume=folder, keep_saes=True))
    pd.testing.assert_frame_equal(_numbers(resumed.rows), _numbers(whole))
    assert len(resumed.resumed) == 2
    assert sorted(p.name for p in (tmp_path / "run").glob("sae_layer_*")) == \
        ["sae_layer_000", "sae_layer_001", "sae_layer_002"]      # SAEs from the tasks, saved here


@pytest.mark.parametrize("changes, message", [
    ({"sae_device": "mps"}, "Ray tasks train on cuda or cpu"),
    ({"sae_device": "cuda"}, "the Ray cluster has no GPUs"),
    ({"ray_cpus": 64}, "ray_cpus 64 exceeds the Ray cluster's 2 CPUs"),
    ({"ray": "env"}, "LAB_RAY_ADDRESS, which is not set"),
])
def test_cluster_checks_come_before_any_work(tiny, changes, message, monkeypatch):
    monkeypatch.delenv("LAB_RAY_ADDRESS", raising=False)
    with pytest.raises(ValueError, match=message):
        laminar.run(tiny, replace(ON_RAY, **changes))


def test_cli_ray_local_gives_the_in_process_rows(tiny):
    """`--ray local` in a fresh process: it starts its own Ray (2 CPUs, as this machine has)."""
    cmd = [sys.executable, "-m", "lab", "laminar", "--model", "tiny-gpt2", "--device", "cpu",
           "--preset", "tiny", "--quiet", "--json"]
    there = subprocess.run([*cmd, "--ray", "local"], capture_output=True, text=True, timeout=600)
    assert there.returncode == 0, there.stderr
    rows = pd.DataFrame(json.loads(there.stdout)["rows"])
    pd.testing.assert_frame_equal(_numbers(rows), _numbers(laminar.run(tiny, TINY).rows),
                                  check_dtype=False)

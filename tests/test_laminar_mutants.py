"""lab.laminar.train's promises that the mutation audit (issue 16, bench/mutate.py laminar)
found unguarded: the Ray path (here without Ray: a pool that runs each layer's task inline),
a resume with nothing left, where the captured rows go (memory_fraction), the row of one
layer, the code density over many chunks, and the ETA in the progress messages."""
from __future__ import annotations

import math
import time
from dataclasses import replace

import pandas as pd
import pytest
import torch

from lab import laminar
from lab.experiment import replace_paths
from lab.laminar import cluster
from lab.laminar import train as laminar_train
from lab.laminar.cluster import ModelInfo, _train_task
from lab.laminar.cost import forward_flops, layer_flops
from lab.laminar.store import RunFolder
from lab.sae import init_sae, latent_stats
from lab.sae import devices as sae_devices
from lab.sae.model import EVAL_CHUNK

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = laminar.preset("tiny")


def _windows(tiny, n=2, T=16):
    return torch.randint(0, tiny.vocab_size, (n, T), generator=torch.Generator().manual_seed(1))


def _numbers(rows: pd.DataFrame) -> pd.DataFrame:
    return rows.drop(columns="seconds").reset_index(drop=True)


# ---------------------------------------------------------------- the Ray path, without Ray

class InlinePool:
    """cluster.Pool's interface without Ray: one `waiting` tick, then each layer's task
    (cluster._train_task, what a Ray worker runs) here, the last layer first (tasks end in
    any order)."""
    made: list["InlinePool"] = []

    def __init__(self, cfg):
        self.cfg, self.trained = cfg, []
        InlinePool.made.append(self)

    def describe(self) -> str:
        return "Ray tasks (1 CPU each)"

    def train(self, lm, acts, layers, cfg, finished, waiting=None):
        waiting(len(layers))
        info = ModelInfo(lm.name, lm.n_layers)
        for j in reversed(range(len(layers))):
            self.trained.append(layers[j])
            finished(*_train_task(info, acts[j].numpy(), layers[j], cfg, "cpu",
                                  torch.get_num_threads()))


def test_ray_path_gives_the_in_process_rows(tiny, monkeypatch):
    monkeypatch.setattr(cluster, "Pool", InlinePool)
    InlinePool.made = []
    here = laminar.sweep(tiny, _windows(tiny), TINY)
    # sae_device cuda is the cluster's business: this process never resolves it (no CUDA here)
    cfg = replace(TINY, ray="local", sae_device="cuda")
    sent = []
    there = laminar.sweep(tiny, _windows(tiny), cfg, on_progress=sent.append)
    [pool] = InlinePool.made
    assert pool.cfg is cfg and pool.trained == [2, 1, 0]   # the pool trained every layer, once
    pd.testing.assert_frame_equal(_numbers(there), _numbers(here))   # sorted by layer
    waiting = [p for p in sent if "queued" in p.message]
    assert [(p.done, p.message) for p in waiting] == [
        (1, "3 layers queued or training as Ray tasks (1 CPU each) (0/3 layers done)")]
    assert [p.partial["layer"].tolist() for p in sent if p.message.startswith("layer")] == \
        [[2], [1, 2], [0, 1, 2]]   # the partial rows stay sorted as tasks end out of order


def test_in_process_sweep_refuses_a_device_it_lacks_before_the_capture(tiny):
    """Without a pool the SAEs train here, on cfg.device_of: a device this machine lacks is an
    error, not a silent fallback to the CPU (no machine has both CUDA and MPS)."""
    from lab.models import available_devices
    absent = next(d for d in ("cuda", "mps") if d not in available_devices())
    batches = []
    with pytest.raises(ValueError, match=f"sae_device: device '{absent}' is not present here"):
        laminar.sweep(tiny, _windows(tiny), replace(TINY, sae_device=absent),
                      on_progress=batches.append)
    assert batches == []   # refused before any forward pass


# ---------------------------------------------------------------- resume

def test_resume_with_every_layer_done_says_so_and_returns_the_rows(tiny, tmp_path):
    folder = RunFolder(tmp_path, {})
    whole = laminar.sweep(tiny, _windows(tiny), TINY, store=folder)
    sent = []
    again = laminar.sweep(tiny, _windows(tiny), TINY, on_progress=sent.append, store=folder)
    pd.testing.assert_frame_equal(again, whole)
    [p] = sent   # nothing captured, nothing trained
    assert (p.done, p.total, p.unit) == (4, 4, "layer") and p.fraction == 1.0
    assert p.message == "all 3 layers were already in the run folder"
    pd.testing.assert_frame_equal(p.partial, whole)


# ---------------------------------------------------------------- where the rows go

@pytest.mark.parametrize("fraction", [0.5, 0.25])
def test_activations_stay_on_the_device_only_while_all_layers_fit(fraction, monkeypatch):
    """4 bytes x layers x windows x (T - 1) positions x d_model against fraction x free."""
    gpu = torch.device("cuda", 0)   # only a name: free memory is what the test says
    cfg = replace(TINY, memory_fraction=fraction)
    shape = (3, 2, 16, 64)
    need = 4 * 3 * 2 * 15 * 64
    monkeypatch.setattr(sae_devices, "free_bytes", lambda device: need / fraction)
    assert laminar_train._home(gpu, cfg, shape) == gpu
    monkeypatch.setattr(sae_devices, "free_bytes", lambda device: need / fraction - 1)
    assert laminar_train._home(gpu, cfg, shape) == torch.device("cpu")


def test_the_sweep_sizes_only_the_layers_it_trains(tiny, tmp_path, monkeypatch):
    folder = RunFolder(tmp_path, {})
    laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(0,)), store=folder)
    asked = []

    def spy(device, nbytes, fraction):
        asked.append((device, nbytes, fraction))
        return sae_devices.fits(device, nbytes, fraction)

    monkeypatch.setattr(laminar_train, "fits", spy)
    rows = laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(0, 2), memory_fraction=0.25),
                         store=folder)
    assert rows["layer"].tolist() == [0, 2]
    # layer 0 came from the folder: only layer 2's 2 x 15 rows of 64 floats are placed
    assert asked == [(torch.device("cpu"), 4 * 1 * 2 * 15 * tiny.d_model, 0.25)]


# ---------------------------------------------------------------- one layer's row

def test_train_layer_gives_the_sweeps_row(tiny):
    acts = laminar.capture_mlp_out(tiny, _windows(tiny), [1])[0]
    epochs = []
    t0 = time.perf_counter()
    row = laminar_train.train_layer(tiny, acts, 1, TINY, on_epoch=epochs.append)
    wall = time.perf_counter() - t0
    swept = laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(1,)))
    assert list(row) == laminar.COLUMNS
    assert {k: v for k, v in row.items() if k != "seconds"} == \
        _numbers(swept).iloc[0].to_dict()
    assert (row["n_layers"], row["activation"], row["epochs"]) == (3, "relu", 2)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert 0 < row["seconds"] <= wall


@pytest.mark.parametrize("n_layers, layer, depth", [(1, 0, 0.0), (2, 1, 1.0), (2, 0, 0.0)])
def test_relative_depth_spans_zero_to_one_on_small_models(tiny, n_layers, layer, depth):
    acts = laminar.capture_mlp_out(tiny, _windows(tiny), [0])[0]
    row, _ = laminar_train.fit_layer(ModelInfo("small", n_layers), acts, layer, TINY)
    assert row["relative_depth"] == depth and row["n_layers"] == n_layers


def test_no_held_out_rows_means_no_held_out_nmse(tiny):
    acts = laminar.capture_mlp_out(tiny, _windows(tiny), [0])[0]
    cfg = replace_paths(TINY, {"sae.val_fraction": 0.0})
    row, _ = laminar_train.fit_layer(tiny, acts, 0, cfg)
    assert math.isnan(row["val_nmse"]) and row["nmse"] > 0


@pytest.mark.parametrize("tf32", [True, False])
def test_tf32_reaches_the_training_and_no_further(tiny, tf32):
    """On the CPU the setting changes nothing computed; what must hold is that training runs
    under it (and the process's setting comes back)."""
    acts = laminar.capture_mlp_out(tiny, _windows(tiny), [0])[0]
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        seen = []
        laminar_train.fit_layer(tiny, acts, 0, replace(TINY, tf32=tf32),
                                on_epoch=lambda r: seen.append(torch.get_float32_matmul_precision()))
        assert seen == ["high" if tf32 else "highest"] * 2
        assert torch.get_float32_matmul_precision() == "highest"
    finally:
        torch.set_float32_matmul_precision(before)


# ---------------------------------------------------------------- code density

@pytest.mark.parametrize("n_rows", [1, EVAL_CHUNK + 100])
def test_code_density_is_latent_stats_over_every_chunk(n_rows):
    acts = torch.randn(n_rows, 16, generator=torch.Generator().manual_seed(0))
    sae = init_sae(torch.randn(64, 16, generator=torch.Generator().manual_seed(1)),
                   replace(TINY.sae, n_latents=32))
    density, dead = laminar_train.code_density(sae, acts)
    stats = latent_stats(sae, acts)
    assert density == pytest.approx(float(stats["density"].mean()), abs=1e-7)
    assert dead == (stats["cls"] == "dead").mean()
    assert 0 < density < 1


# ---------------------------------------------------------------- the ETA in the messages

class Clock:
    def __init__(self, now: float):
        self.now = now

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """The reporter's time, set by the test; durations printed exactly (to the microsecond)."""
    c = Clock(100.0)
    monkeypatch.setattr(laminar_train, "time", c)
    monkeypatch.setattr(laminar_train, "format_duration", lambda s: f"{s:.6f} s")
    return c


def _left(seconds: float) -> str:
    return f", about {seconds:.6f} s left"


def test_capture_eta_is_the_batches_left_then_every_layer_at_the_forward_rate(tiny, clock):
    """Before any SAE has been timed, each layer's SAE FLOPs go at the forward pass's FLOP rate."""
    cfg = replace(TINY, forward_batch=2)
    windows = torch.zeros(7, 16, dtype=torch.long)   # 4 batches of 2, 2, 2, 1 windows
    sent = []
    rep = laminar_train._Reporter(tiny, cfg, windows, 3, sent.append)
    per_layer = layer_flops(tiny, cfg)
    for now, b in ((100.5, 1), (101.0, 2), (102.0, 4)):   # 0.5 s a batch, the last one short
        clock.now = now
        rep.on_batch(b, 4)
    eta = [0.5 * 3 + 3 * per_layer / (forward_flops(tiny, 2, 16) / 0.5),
           1.0 / 2 * 2 + 3 * per_layer / (forward_flops(tiny, 4, 16) / 1.0),
           3 * per_layer / (forward_flops(tiny, 7, 16) / 2.0)]   # 7 windows seen, not 8
    assert [(p.done, p.total, p.unit, p.message) for p in sent] == [
        (b / 4, 4, "layer", f"Capturing MLP outputs of all layers: batch {b}/4{_left(s)}")
        for b, s in zip((1, 2, 4), eta)]
    assert list(sent[0].partial.columns) == laminar.COLUMNS and sent[0].partial.empty


def test_capture_eta_leaves_out_the_layers_resumed_from_the_run_folder(tiny, clock, tmp_path):
    """A resume with layer 0 of 3 in the folder: while capturing, the ETA counts the 2 SAEs left,
    not 3 (the reporter knows the resumed count from the start, not only once training starts)."""
    folder = RunFolder(tmp_path, {})
    laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(0,)), store=folder)

    def tick() -> float:   # each reading of the clock is one second later
        clock.now += 1.0
        return clock.now
    clock.perf_counter = tick
    sent = []
    laminar.sweep(tiny, _windows(tiny), replace(TINY, layers=(0, 1, 2)), on_progress=sent.append,
                  store=folder)
    capture = [p for p in sent if p.message.startswith("Capturing")]
    # 2 windows in one batch of 2, read 1 s after the reporter started: 2 layers at that rate
    eta = 2 * layer_flops(tiny, TINY) / (forward_flops(tiny, 2, 16) / 1.0)
    assert [(p.done, p.message) for p in capture] == [
        (1.0, f"Capturing MLP outputs of all layers: batch 1/1{_left(eta)}")]


def _row(layer: int) -> dict:
    return {"layer": layer, "density": 0.25, "nmse": 0.5, "val_nmse": 0.75, "seconds": 3.0}


def test_training_eta_counts_only_layers_trained_here(tiny, clock):
    """One layer resumed of 4: the time left is the trained layers' pace times the layers left."""
    sent = []
    rep = laminar_train._Reporter(tiny, TINY, _windows(tiny), 4, sent.append, resumed=1)
    clock.now = 200.0
    rep.start_training()
    rep.waiting([_row(0)], 3, InlinePool(TINY))   # nothing trained yet: no pace, no ETA
    clock.now = 203.0
    rep.on_epoch(1, 2)({"epoch": 1, "epochs": 2})  # half a layer in 3 s: 2.5 layers left
    rep.on_epoch(1, 2)({"epoch": 2, "epochs": 2})  # the last epoch: layer_done says it
    clock.now = 206.0
    rep.layer_done([_row(0), _row(2)], _row(2))   # one layer in 6 s: 2 left
    clock.now = 230.0
    rep.layer_done([_row(0), _row(1), _row(2), _row(3)], _row(3))   # all done: nothing left
    done = "layer {}: density 0.2500 nmse 0.5000 held-out 0.7500 (3.0 s; {}/4 layers done{})"
    assert [(p.done, p.message) for p in sent] == [
        (2, "3 layers queued or training as Ray tasks (1 CPU each) (1/4 layers done)"),
        (2.5, f"Layer 2: SAE epoch 1/2 (1/4 layers done{_left(15)})"),
        (3, done.format(2, 2, _left(12))),
        (5, done.format(3, 4, ""))]
    assert sent[-1].partial["layer"].tolist() == [0, 1, 2, 3]

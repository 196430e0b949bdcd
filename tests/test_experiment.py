"""The contract's machinery: field validation, configs <-> CLI arguments, Progress."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from lab.cli.experiments import add_config_arguments, config_from
from lab.experiment import Progress, build, field_of, param, replace_paths, share_seed, validate


@dataclass(frozen=True)
class Inner:
    k: int = param(32, "active latents per token", min=1)
    lr: float = param(1e-4, "learning rate", gt=0)
    seed: int = param(0, "random seed", min=0)

    def __post_init__(self):
        validate(self)


@dataclass(frozen=True)
class Outer:
    text: str = param("", "the text to read", file=True)
    layer: int | None = param(None, "block index", min=0)
    site: Literal["mlp_out", "mlp_post"] = param("mlp_out", "where to read")
    tied: bool = param(True, "tie the decoder")
    words: tuple[str, ...] = param(("a", "b"), "target words")
    lr: float = param(1e-3, "outer learning rate", gt=0, max=1)
    seed: int = param(0, "random seed", min=0)
    sae: Inner = param(Inner(), "the SAE")

    def __post_init__(self):
        validate(self)
        share_seed(self, "sae")


@pytest.mark.parametrize("bad, says", [
    (dict(layer=-1), "layer must be at least 0"),
    (dict(site="resid"), "site must be one of mlp_out, mlp_post"),
    (dict(lr=float("nan")), "lr must be a finite number"),
    (dict(lr=0.0), "lr must be greater than 0"),
    (dict(lr=2.0), "at most 1"),
    (dict(tied=1), "tied must be true or false"),
    (dict(layer=1.5), "layer must be an integer"),
    (dict(layer=True), "layer must be an integer"),
])
def test_validate_one_sentence(bad, says):
    with pytest.raises(ValueError, match=says) as e:
        Outer(**bad)
    assert "\n" not in str(e.value)


def test_optional_none_and_nested_bounds():
    assert Outer(layer=None).layer is None
    with pytest.raises(ValueError, match="k must be at least 1"):
        Inner(k=0)


def test_configs_are_hashable_and_share_the_seed():
    a, b = Outer(seed=3), Outer(seed=3, sae=Inner(seed=99))
    assert a.sae.seed == 3 and b.sae.seed == 3 and a == b and hash(a) == hash(b)


def test_build_and_replace_nested_paths():
    cfg = build(Outer, {"sae.k": 7, "seed": 2, "site": "mlp_post"})
    assert (cfg.sae.k, cfg.sae.seed, cfg.site) == (7, 2, "mlp_post")
    assert replace_paths(cfg, {"sae.lr": 0.5}).sae == Inner(k=7, lr=0.5, seed=2)
    assert field_of(Outer, "sae.k").help == "active latents per token"


def test_cli_arguments_come_from_the_fields(tmp_path: Path):
    parser = argparse.ArgumentParser()
    pairs = add_config_arguments(parser, Outer)
    flags = {flag for _, flag in pairs}
    assert {"text", "layer", "site", "tied", "words", "lr", "seed", "k", "sae_lr"} == flags
    assert "seed" not in {p for p, _ in pairs if p.startswith("sae.")}   # one seed
    help_text = parser.format_help()
    assert "active latents per token (default: 32)" in help_text
    (tmp_path / "t.txt").write_text("hello text", encoding="utf-8")
    args = parser.parse_args(["--text-file", str(tmp_path / "t.txt"), "--k", "5", "--sae-lr",
                              "0.1", "--no-tied", "--words", "x, y", "--seed", "3"])
    cfg = config_from(Outer, pairs, args)
    assert cfg == Outer(text="hello text", tied=False, words=("x", "y"), seed=3,
                        sae=Inner(k=5, lr=0.1))
    assert config_from(Outer, pairs, parser.parse_args([])) == Outer()   # defaults untouched


def test_cli_rejects_bad_choice():
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, Outer)
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--site", "nope"])


def test_progress_fraction():
    assert Progress(3, 4, "step").fraction == 0.75
    assert Progress(5, 4, "step").fraction == 1.0 and Progress(0, 0, "step").fraction == 0.0


@dataclass(frozen=True)
class SelfFilling:
    """A config that fills `steps` left None from its `mode` (as ActMaxConfig's methods do)."""

    mode: Literal["slow", "fast"] = param("slow", "which mode")
    steps: int | None = param(None, "steps (default: the mode's)", min=1)

    def __post_init__(self):
        if self.steps is None:
            object.__setattr__(self, "steps", {"slow": 500, "fast": 60}[self.mode])


@dataclass(frozen=True)
class HoldsSelfFilling:
    inner: SelfFilling = param(SelfFilling(), "a nested self-filling config")


def test_replace_paths_lets_a_new_mode_fill_its_own_defaults():
    cfg = replace_paths(HoldsSelfFilling(), {"inner.mode": "fast"})
    assert cfg.inner.steps == 60                       # not the slow mode's filled 500
    assert build(HoldsSelfFilling, {"inner.mode": "fast"}).inner.steps == 60
    assert replace_paths(SelfFilling(steps=7), {"mode": "fast"}).steps == 7   # set by hand: kept
    assert replace_paths(SelfFilling(), {"mode": "fast", "steps": 500}).steps == 500


def test_cli_repro_with_another_method_runs_that_methods_defaults():
    from lab.actmax.config import method_defaults
    from lab.actmax.repro import ReproConfig
    parser = argparse.ArgumentParser()
    pairs = add_config_arguments(parser, ReproConfig)
    cfg = config_from(ReproConfig, pairs, parser.parse_args(["--method", "discrete"]))
    assert cfg.actmax.method == "discrete"
    assert cfg.actmax.steps == method_defaults("discrete")["steps"] != ReproConfig().actmax.steps
    assert cfg.actmax.candidates == method_defaults("discrete")["candidates"]
    cfg = config_from(ReproConfig, pairs, parser.parse_args(["--method", "discrete",
                                                             "--steps", "500"]))
    assert cfg.actmax.steps == 500

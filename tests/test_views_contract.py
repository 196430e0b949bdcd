"""Pages never compute: a view may use from `lab` only the registry, configs, charts,
constants, exceptions and the few cheap helpers below (parsing a widget's text, a default, a
preset); everything that computes runs as a job through ui.jobs. And no st.cache_data or
st.cache_resource in views/: a cache beside the runner is memory outside the session budget.

The check reads the views' source (AST): every name that reaches into `lab` is resolved to the
object it names, and judged by what it is.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Functions a page may call: cheap, no model and no tensors (each says why it is here).
HELPERS = {
    "lab.experiment.field_of",          # a config field's help and bounds, for a widget
    "lab.experiment.replace_paths",     # a preset with a widget's values
    "lab.hidden.default_text",          # the bundled paragraph
    "lab.hidden.decode_upload",         # an upload's bytes as text, or one sentence
    "lab.hidden.check_text",            # an emptied text box, one sentence
    "lab.selectivity.parse_words",      # a comma-separated word list
    "lab.hooks.hook_names",             # the hook points a model has (names only)
    "lab.hooks.hook_name",
    "lab.hooks.width",                  # a hook point's width, from the model's shapes
    "lab.models.available_devices",
    "lab.steer.default_hook",
    "lab.board.changed_settings",       # the board's rows, grouped (SQLite reads, no model)
    "lab.board.groups",
    "lab.board.stats.actmax_table",
    "lab.board.stats.feature_sentence",
    "lab.board.stats.feature_table",
    "lab.corpus.sources.cached_articles",   # file names in the cache folder
    "lab.corpus.sources.default_sources",
    "lab.laminar.preset",
    "lab.laminar.rates_config",         # the speed probe's key (the probe runs as a job)
    "lab.laminar.estimate",             # FLOPs / measured rates: arithmetic
    "lab.laminar.describe_shape",       # a sentence from a result's numbers
    "lab.laminar.format_duration",
    "lab.laminar.frame",                # an empty table with the result's columns
    "lab.sae_text.rescore_config",      # the rescore job's key
    "lab.sae_text.default_layer",
    "lab.sae_text.layer_value",
    "lab.sae_text.default_text",
    "lab.corpus.bundled_article",       # a text as an Article: a file read and a hash
    "lab.corpus.cached_article",
    "lab.corpus.text_article",
    "lab.corpus.fetch_wikipedia",       # one HTTP request (I/O, no model), kept on disk
    "lab.corpus.allowed_hosts_from_env",
    "lab.corpus.token_ids",             # the tokenizer only, kept per text in lab.corpus
    "lab.laminar.corpus_windows",       # whether the windows fit: index arithmetic on ids
    "lab.feature.store.keep_sae",       # the SAE page's SAE written to a folder for the feature view
    "lab.actmax.nearest_wide",          # a result's table reshaped for display
    "lab.sae.load.units",               # the process's one SAE loader (cached, bounded, in lab)
    "lab.sae.load.describe",
}


def lab_uses(source: str) -> list[tuple[int, str]]:
    """(line, dotted path) of every use of a `lab` object in `source`."""
    tree = ast.parse(source)
    alias: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lab":
            for a in node.names:
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "lab":
                    alias[a.asname or a.name.split(".")[0]] = a.asname and a.name or "lab"
    uses, inner = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            inner.add(id(node.value))
    for node in ast.walk(tree):
        if id(node) in inner or not isinstance(node, (ast.Attribute, ast.Name)):
            continue
        chain, cur = [], node
        while isinstance(cur, ast.Attribute):
            chain.append(cur.attr)
            cur = cur.value
        if isinstance(cur, ast.Name) and cur.id in alias and isinstance(cur.ctx, ast.Load):
            uses.append((node.lineno, ".".join([alias[cur.id]] + chain[::-1])))
    return uses


def _resolve(path: str):
    """(dotted path, object) of the first thing past the modules in `path`: what a use of
    `lab` reaches (a constant's own methods, `EMPTY_TEXT.capitalize`, are the constant's).
    Names are looked up as the code would (`lab.hidden.capture` is the function the package
    exports, not its submodule of that name)."""
    import types
    parts = path.split(".")
    obj = importlib.import_module(parts[0])
    for i, name in enumerate(parts[1:], start=1):
        if hasattr(obj, name):
            obj = getattr(obj, name)
        else:
            obj = importlib.import_module(".".join(parts[:i + 1]))
        if not isinstance(obj, types.ModuleType):
            return ".".join(parts[:i + 1]), obj
    return path, obj


def allowed(path: str) -> bool:
    path, obj = _resolve(path)
    if path.startswith(("lab.registry", "lab.charts")) or path in HELPERS:
        return True
    if isinstance(obj, type):   # a config to build, a result type, an exception to catch
        return dataclasses.is_dataclass(obj) or issubclass(obj, Exception)
    if callable(obj):
        # a method of a config or of a config's field path (SAEConfig().latents_for) is reached
        # through an instance, not here; a module-level function is a computation
        return False
    return True   # a constant (and a module only ever reached through one of the above)


def violations(source: str) -> list[str]:
    out = []
    for line, path in lab_uses(source):
        try:
            ok = allowed(path)
        except (ImportError, AttributeError):
            ok = False
        if not ok:
            out.append(f"{line}: {path}")
    return sorted(set(out), key=lambda t: int(t.split(":")[0]))


def cache_decorators(source: str) -> list[int]:
    return [n.lineno for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Attribute) and n.attr in ("cache_data", "cache_resource")]


VIEWS = sorted((ROOT / "views").glob("*.py"))


def test_views_use_only_the_registry_configs_charts_and_cheap_helpers():
    bad = {v.name: violations(v.read_text()) for v in VIEWS}
    assert not {k: v for k, v in bad.items() if v}


def test_views_keep_no_cache_of_their_own():
    bad = {v.name: cache_decorators(v.read_text()) for v in VIEWS}
    assert not {k: v for k, v in bad.items() if v}


def test_the_check_catches_a_view_that_computes():
    # the hidden page as it was before issue 26: the forward on the page, cached beside the runner
    before = ("import streamlit as st\nfrom lab import hidden\nfrom lab.hidden import HiddenConfig\n"
              "@st.cache_data(max_entries=4)\ndef _states(_lm, cfg):\n    return hidden.capture(_lm, cfg)\n"
              "cfg = HiddenConfig(text=hidden.default_text())\n")
    assert violations(before) == ["6: lab.hidden.capture"]
    assert cache_decorators(before) == [4]
    assert violations("from lab.sae_text import run as train\ntrain(lm, cfg)\n") == ["2: lab.sae_text.run"]
    assert violations("import lab.laminar as L\nL.measure_rates(lm, cfg)\n") == ["2: lab.laminar.measure_rates"]

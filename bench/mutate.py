"""Mutation testing of one module group with mutmut, in a scratch copy of the tree (issue 16).

    pip install -r requirements-dev.txt            # mutmut and hypothesis, pinned
    python bench/mutate.py hooks                    # or: sae, selectivity, corpus, laminar, actmax
    python bench/mutate.py corpus --only 'lab.corpus.fetch.x_check_url*'   # one function
    python bench/mutate.py --list                   # the groups, their files and tests

mutmut changes one thing at a time in the group's files (an operator, a constant, a string, an
argument) and runs the tests that reach the changed function; a mutant that no test notices
("survived") is a bug the tests would miss. The script prints the kill rate per file and every
survivor as a diff, and writes them to WORKDIR/report.json. It never touches this tree: the copy
(the working tree's tracked and untracked, not ignored, files; or a commit with --ref) goes to a
temporary folder.

Two adjustments in the copy, neither changing behaviour:
- mutmut skips decorated functions (it wraps each function in a trampoline). A decorator is
  applied by hand instead (`@torch.no_grad()` + `def f` becomes `def f` + `f = torch.no_grad()(f)`,
  which is what the decorator syntax means), so `capture`, `latent_stats` and the like are mutated.
- The group's files and tests replace `only_mutate` and the test selection of the `[tool.mutmut]`
  section in pyproject.toml; the rest of that section (options shared by every group) is kept.

One group takes ~1-7 minutes on 2 cores (measured: hooks 1, selectivity 2, laminar 2, sae 2,
actmax 4.5, corpus 6.5) (--children 2, the default; each child runs torch with
one thread). Not part of CI.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# group -> (files to mutate, tests that guard them: only these run, so one group stays quick)
GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "hooks": (["lab/hooks.py"],
              ["tests/test_hooks.py", "tests/test_lens.py", "tests/test_guards.py",
               "tests/test_mutants.py"]),
    "sae": (["lab/sae/stats.py", "lab/sae/model.py"],
            ["tests/test_sae.py", "tests/test_guards.py", "tests/test_properties.py",
             "tests/test_mutants.py", "tests/test_pinned_sae.py"]),
    "selectivity": (["lab/selectivity.py"],
                    ["tests/test_sae.py", "tests/test_guards.py", "tests/test_properties.py",
                     "tests/test_mutants.py"]),
    "corpus": (["lab/corpus/fetch.py", "lab/corpus/extract.py"],
               ["tests/test_corpus.py", "tests/test_guards.py", "tests/test_properties.py",
                "tests/test_mutants.py"]),
    "laminar": (["lab/laminar/train.py"],
                # not test_ray.py: its Stop test fails under mutmut's trampolines (Ray workers)
                ["tests/test_laminar.py", "tests/test_laminar_resume.py",
                 "tests/test_pinned_laminar.py", "tests/test_mutants.py",
                 "tests/test_laminar_mutants.py"]),
    "actmax": (["lab/actmax/optimize.py", "lab/actmax/decode.py"],
               ["tests/test_actmax.py", "tests/test_guards.py", "tests/test_pinned_actmax.py",
                "tests/test_mutants.py"]),
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


# ---------------------------------------------------------------- the scratch copy

def copy_tree(dest: Path, ref: str | None = None) -> None:
    """The working tree's tracked and untracked (not ignored) files, as they are now; or the
    tree of commit `ref` (a clean state while others edit the working tree)."""
    if ref:
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return
    out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                         check=True, capture_output=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def undecorate(source: str) -> str:
    """Apply function decorators by assignment after the def (same meaning, and mutmut then
    mutates the function: it skips decorated ones). Class decorators are left alone."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits = []   # (first decorator line, def line, end line, indent, name, decorator sources)
    for node in ast.walk(tree):
        body = getattr(node, "body", [])
        for child in body if isinstance(body, list) else []:
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.decorator_list:
                decos = [ast.get_source_segment(source, d) for d in child.decorator_list]
                if decos in (["staticmethod"], ["classmethod"]):
                    continue     # mutmut handles these itself
                first = min(d.lineno for d in child.decorator_list) - 1
                indent = re.match(r"\s*", lines[child.lineno - 1]).group(0)
                edits.append((first, child.lineno - 1, child.end_lineno, indent, child.name, decos))
    for first, def_line, end, indent, name, decos in sorted(edits, reverse=True):
        wrapped = name
        for d in reversed(decos):
            wrapped = f"({d})({wrapped})"
        lines[end:end] = [f"{indent}{name} = {wrapped}\n"]
        del lines[first:def_line]
    return "".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


def write_config(copy: Path, files: list[str], tests: list[str], extra_k: str | None) -> dict:
    """The copy's [tool.mutmut]: the repo's, with this group's files and tests."""
    path = copy / "pyproject.toml"
    text = path.read_text()
    cfg = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    cfg["only_mutate"] = files
    cfg["pytest_add_cli_args_test_selection"] = [t for t in tests if (copy / t).exists()]
    if extra_k:
        args = list(cfg.get("pytest_add_cli_args", []))
        if "-k" in args:
            i = args.index("-k") + 1
            args[i] = f"({args[i]}) and ({extra_k})"
        else:
            args += ["-k", extra_k]
        cfg["pytest_add_cli_args"] = args
    section = "[tool.mutmut]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.items())
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text).rstrip() + "\n\n" + section
    path.write_text(text)
    return cfg


# ---------------------------------------------------------------- running and reading mutmut

def mutmut_command() -> list[str]:
    exe = Path(sys.executable).parent / "mutmut"
    if exe.exists():
        return [str(exe)]
    if shutil.which("mutmut"):
        return ["mutmut"]
    sys.exit("mutmut is not installed here: pip install -r requirements-dev.txt")


def results(copy: Path, cmd: list[str], env: dict) -> dict[str, str]:
    """{mutant name: status} of every mutant, from `mutmut results --all true`."""
    out = subprocess.run([*cmd, "results", "--all", "true"], cwd=copy, env=env, text=True,
                         capture_output=True).stdout
    found = (re.match(r"\s+(\S+): (.+)$", line) for line in out.splitlines())
    return {m.group(1): m.group(2).strip() for m in found if m}


def diff_of(copy: Path, cmd: list[str], env: dict, name: str) -> str:
    out = subprocess.run([*cmd, "show", name], cwd=copy, env=env, text=True,
                         capture_output=True).stdout
    return "\n".join(line for line in out.splitlines()
                     if line.startswith(("+", "-")) and not line.startswith(("+++", "---")))


def module_of(name: str) -> str:
    """lab.corpus.fetch.x_check_url__mutmut_3 -> lab.corpus.fetch"""
    return re.sub(r"\.(x_|xǁ).*$", "", name)


def summarize(status: dict[str, str]) -> dict[str, dict]:
    per: dict[str, dict] = {}
    for name, st in status.items():
        row = per.setdefault(module_of(name), {"total": 0, "killed": 0, "survivors": []})
        row["total"] += 1
        if st in KILLED:
            row["killed"] += 1
        elif st != "skipped":
            row["survivors"].append((name, st))
    for row in per.values():
        row["kill_rate"] = row["killed"] / max(row["total"], 1)
    return per


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("group", nargs="?", choices=sorted(GROUPS))
    ap.add_argument("--list", action="store_true", help="print the groups and exit")
    ap.add_argument("--only", nargs="*", default=[],
                    help="mutant name globs (e.g. 'lab.hooks.x_capture*'): scope to functions")
    ap.add_argument("--children", type=int, default=2, help="mutants tested at once")
    ap.add_argument("-k", dest="k", default=None, help="extra pytest -k filter for this run")
    ap.add_argument("--ref", default=None, help="copy this commit (e.g. HEAD), not the working tree")
    ap.add_argument("--workdir", type=Path, default=None, help="the copy (default: a temp dir)")
    ap.add_argument("--no-diffs", action="store_true", help="list survivors without their diffs")
    args = ap.parse_args(argv)
    if args.list or not args.group:
        for g, (files, tests) in GROUPS.items():
            print(f"{g:12s} {' '.join(files)}\n{'':12s} tests: {' '.join(tests)}")
        return 0
    files, tests = GROUPS[args.group]
    copy = args.workdir or Path(tempfile.mkdtemp(prefix=f"mutate-{args.group}-"))
    if (copy / "mutants").exists():
        shutil.rmtree(copy / "mutants")   # stale results of another group would mix in
    copy.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    copy_tree(copy, args.ref)
    for f in files:
        (copy / f).write_text(undecorate((copy / f).read_text()))
    cfg = write_config(copy, files, tests, args.k)
    print(f"copy: {copy}\nmutating {', '.join(files)}\ntests: "
          f"{' '.join(cfg['pytest_add_cli_args_test_selection'])} {' '.join(cfg.get('pytest_add_cli_args', []))}",
          flush=True)
    # one torch thread per child: forked workers must not inherit an OpenMP pool, and two
    # children on two cores are the machine's worth
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env.pop("MUTANT_UNDER_TEST", None)
    cmd = mutmut_command()
    run = subprocess.run(["nice", "-n", "10", *cmd, "run", "--max-children", str(args.children),
                          *args.only], cwd=copy, env=env, text=True, capture_output=True)
    (copy / "mutmut-run.log").write_text(run.stdout + run.stderr)
    if run.returncode != 0:
        print((run.stdout + run.stderr)[-4000:])
        print(f"mutmut run failed (exit {run.returncode}); log: {copy / 'mutmut-run.log'}")
        return run.returncode
    status = results(copy, cmd, env)
    if args.only:
        from fnmatch import fnmatch
        status = {n: s for n, s in status.items() if any(fnmatch(n, g) for g in args.only)}
    per = summarize(status)
    seconds = time.perf_counter() - t0
    print(f"\n{len(status)} mutants in {seconds:.0f} s")
    for mod, row in sorted(per.items()):
        print(f"{mod:28s} killed {row['killed']:4d} / {row['total']:4d}  ({100 * row['kill_rate']:.1f}%)")
    for mod, row in sorted(per.items()):
        for name, st in row["survivors"]:
            print(f"\n{st}: {name}")
            if not args.no_diffs:
                diff = row.setdefault("diffs", {})[name] = diff_of(copy, cmd, env, name)
                print(diff)
    (copy / "report.json").write_text(json.dumps({"group": args.group, "seconds": seconds,
                                                  "modules": per}, indent=1))
    print(f"\nreport: {copy / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

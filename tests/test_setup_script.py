"""tools/setup_lab.py stops with one sentence and a non-zero exit when Python is too old or cannot
make a virtual environment with pip; an active venv is used as it is. Offline, well under 5 s:
nothing here reaches pip install."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "setup_lab.py"
_spec = importlib.util.spec_from_file_location("setup_lab", SCRIPT)
setup_lab = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(setup_lab)


def _run_stub(patch: str, *args: str) -> subprocess.CompletedProcess:
    """The script under this Python with `patch` applied first: a stub interpreter."""
    code = (f"import sys, runpy, importlib.util\n{patch}\n"
            f"sys.argv = [{str(SCRIPT)!r}, *{list(args)!r}]\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, cwd=ROOT)


def _one_sentence(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    msg = lines[0]
    assert msg.startswith("setup: ") and msg.endswith("."), msg
    return msg


def test_python_without_venv_names_the_package(tmp_path):
    hide_ensurepip = ("real = importlib.util.find_spec\n"
                      "importlib.util.find_spec = "
                      "lambda n, *a: None if n == 'ensurepip' else real(n, *a)")
    r = _run_stub(hide_ensurepip, "--venv", str(tmp_path / "venv"))
    assert r.returncode != 0
    msg = _one_sentence(r.stderr)
    assert "ensurepip" in msg
    if Path("/etc/debian_version").exists():
        assert f"sudo apt install python{sys.version_info[0]}.{sys.version_info[1]}-venv" in msg
    else:
        assert "python.org" in msg
    assert not (tmp_path / "venv").exists()


def test_old_python_is_refused():
    r = _run_stub("sys.version_info = (3, 9, 2, 'final', 0)")
    assert r.returncode != 0
    msg = _one_sentence(r.stderr)
    assert "Python 3.9.2" in msg and "3.11 or newer" in msg


def test_python_newer_than_the_torch_wheels_is_refused():
    with pytest.raises(setup_lab.SetupError, match="up to Python 3.14"):
        setup_lab.check_python((3, 15, 0), "python3")


def test_venv_made_without_pip_is_detected(tmp_path, monkeypatch, capsys):
    """Debian without python3-venv: `python3 -m venv` leaves an environment with no pip."""
    monkeypatch.setattr(setup_lab, "is_debian_like", lambda: True)
    monkeypatch.setattr(setup_lab, "create_venv", lambda venv: subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True))
    assert setup_lab.main(["--venv", str(tmp_path / "venv")]) == 1
    msg = _one_sentence(capsys.readouterr().err)
    assert "without pip" in msg and "sudo apt install python3" in msg


def test_active_venv_is_used_as_it_is(tmp_path, monkeypatch):
    def no_new_venv(venv):
        raise AssertionError(f"would make {venv} inside an active venv")
    monkeypatch.setattr(setup_lab, "active_venv", lambda: tmp_path)
    monkeypatch.setattr(setup_lab, "has_pip", lambda python: True)
    monkeypatch.setattr(setup_lab, "python_version", lambda python: (3, 11, 2))
    monkeypatch.setattr(setup_lab, "ensure_venv", no_new_venv)
    venv, python, was_active = setup_lab.choose_env(None)
    assert (venv, python, was_active) == (tmp_path, setup_lab.venv_python(tmp_path), True)
    assert any("streamlit run app.py" in line for line in setup_lab.start_commands(venv, True))


@pytest.mark.parametrize("system, machine, release", [
    ("Darwin", "x86_64", "14.5"), ("Darwin", "arm64", "13.6"), ("Windows", "ARM64", "")])
def test_platforms_without_a_torch_wheel(system, machine, release):
    with pytest.raises(setup_lab.SetupError, match="torch 2.13.0"):
        setup_lab.check_platform(system, machine, release)


@pytest.mark.parametrize("system, machine, release", [
    ("Darwin", "arm64", "14.0"), ("Windows", "AMD64", ""), ("Linux", "x86_64", "")])
def test_platforms_with_a_torch_wheel(system, machine, release):
    setup_lab.check_platform(system, machine, release)


def test_start_command_is_printed_for_the_project_venv():
    lines = setup_lab.start_commands(ROOT / ".venv", was_active=False)
    exe = r".venv\Scripts\streamlit" if setup_lab.WINDOWS else ".venv/bin/streamlit"
    assert f"    {exe} run app.py" in lines

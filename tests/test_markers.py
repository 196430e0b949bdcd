"""A `-m` of one's own keeps the Ray and GPU tests out unless it names them (tests/conftest.py):
the README tells users without chromium to add `-m "not browser"`."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider",
                           *args, "tests/test_laminar.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300).stdout


def test_a_marker_expression_of_ones_own_keeps_gpu_tests_out():
    out = _collected("-m", "not browser")
    assert "test_laminar.py::" in out and "test_gpu_" not in out


def test_naming_the_marker_brings_them_back():
    out = _collected("-m", "gpu")
    assert "test_gpu_" in out and "test_export_json" not in out

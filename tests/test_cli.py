import json
import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True,
                          timeout=300)


def test_info_json_tiny():
    r = run("info", "--model", "tiny-gpt2", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert facts["layers"] == 3 and facts["d_model"] == 64 and facts["d_mlp"] == 256
    assert facts["parameters"] > 0 and "load_seconds" in facts


def test_info_json_smollm2(smol):  # smol: the converted copy exists, so this is a quick load
    r = run("info", "--model", "smollm2-135m", "--json")
    assert r.returncode == 0, r.stderr
    facts = json.loads(r.stdout)
    assert (facts["layers"], facts["d_model"], facts["vocab"]) == (30, 576, 49152)


def test_bad_arguments_exit_2_with_one_line():
    for args in (["info", "--model", "nope"], ["info"], ["frobnicate"], ["info", "--model", "tiny-gpt2", "--device", "tpu"]):
        r = run(*args)
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr

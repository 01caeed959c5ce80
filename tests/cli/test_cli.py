"""`omniforge` as a user runs it: a real process, a real registry under OMNIFORGE_HOME."""
import json
import os
import subprocess
import sys

import httpx
import pytest

from support import free_port


def omniforge(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "omniforge_cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return {"OMNIFORGE_HOME": str(tmp_path_factory.mktemp("cli-home"))}


def test_export_registers_and_models_commands_show_it(tiny_run, home):
    r = omniforge("export", "onnx", str(tiny_run), "--name", "tiny-cli", "--promote", env=home)
    assert r.returncode == 0, r.stderr
    assert "onnx parity: max abs logit difference" in r.stdout and "registered tiny-cli:1 (production)" in r.stdout
    listing = omniforge("models", "list", env=home)
    assert "tiny-cli" in listing.stdout and "production" in listing.stdout
    described = omniforge("models", "describe", "tiny-cli", env=home)
    assert described.returncode == 0, described.stderr
    assert "transformer.h.0.attn.c_attn" in described.stdout and "total" in described.stdout
    assert "onnx_parity_max_abs" in described.stdout
    missing = omniforge("models", "describe", "nope", env=home)
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr


def test_describe_counts_every_parameter(tiny_run, home):
    from omniforge_training.export_onnx import load_trained

    model, _ = load_trained(tiny_run)
    described = omniforge("models", "describe", "tiny-cli", env=home).stdout
    assert f"{model.num_params():,}" in described


def test_up_detach_status_down(home):
    ports = {"OMNIFORGE_GATEWAY_PORT": str(free_port()), "OMNIFORGE_TEXT_PORT": str(free_port()),
             "OMNIFORGE_TEXT_THREADS": "1", "OMNIFORGE_FUSION_PORT": str(free_port()),
             "OMNIFORGE_IMAGE_PORT": str(free_port()), "OMNIFORGE_IMAGE_METRICS_PORT": str(free_port()),
             "OMNIFORGE_FUSION_METRICS_PORT": str(free_port()), "OMNIFORGE_GATEWAY_FUSION_ADDRESS": "", "OMNIFORGE_GATEWAY_IMAGE_ADDRESS": "", "OMNIFORGE_GATEWAY_AUDIO_ADDRESS": ""}
    ports["OMNIFORGE_GATEWAY_TEXT_ADDRESS"] = f"127.0.0.1:{ports['OMNIFORGE_TEXT_PORT']}"
    env = {**home, **ports}
    up = omniforge("up", "--detach", env=env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "ready" in up.stdout
        status = omniforge("status", env=env)
        assert status.returncode == 0 and "gateway" in status.stdout and "SERVING" in status.stdout
        url = f"http://127.0.0.1:{ports['OMNIFORGE_GATEWAY_PORT']}"
        reply = httpx.post(f"{url}/generate", json={"prompt": "HAMLET:\n", "max_tokens": 5}, timeout=30).json()
        assert reply["model"] == "tiny-cli" and reply["usage"]["completion_tokens"] == 5
        again = omniforge("up", "--detach", env=env)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        down = omniforge("down", env=env)
    assert down.returncode == 0 and "gateway" in down.stdout
    assert omniforge("status", env=env).returncode == 1


def test_data_build_registers_a_dataset(tmp_path, corpus, home):
    src = tmp_path / "docs.jsonl"
    text = corpus.read_text()
    src.write_text("\n".join(json.dumps({"text": text[i:i + 500]}) for i in range(0, 100_000, 500)))
    r = omniforge("data", "build", str(src), "--name", "hamlet", "--out", str(tmp_path / "ds"),
                  "--tokenizer", "char", "--val-fraction", "0.1", env=home)
    assert r.returncode == 0, r.stderr
    assert "registered dataset hamlet:1" in r.stdout
    # the dataset folder trains directly
    t = omniforge("train", "text", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--n-layer", "1",
                  "--n-embd", "16", "--n-head", "2", "--block-size", "16", "--batch-size", "2", "--max-iters", "5",
                  "--no-progress", env=home)
    assert t.returncode == 0, t.stderr
    assert json.loads(t.stdout.strip().splitlines()[-1])["iters"] == 5


def test_bad_flags_are_clear(tmp_path, home):
    r = omniforge("train", "text", "--data", str(tmp_path / "missing.txt"), env=home)
    assert r.returncode == 1 and "does not exist" in r.stderr
    bad = omniforge("models", "list", env={**home, "OMNIFORGE_DATABASE_URL": "nosuchdb://x"})
    assert bad.returncode != 0

import json

import pytest

from omniforge_shared.bundle import BundleError, load_bundle, write_bundle


def make_bundle(path):
    (path / "model.onnx").write_bytes(b"graph bytes")
    (path / "tokenizer.json").write_text('{"kind": "char", "chars": ["a"]}')
    return write_bundle(path, name="m", version="1", task="text-generation", architecture={"family": "gpt"},
                        files={"model.onnx": "model", "tokenizer.json": "tokenizer"})


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    make_bundle(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
    assert all(len(e["sha256"]) == 64 for e in manifest["files"].values())
    assert load_bundle(tmp_path).file("model") == tmp_path / "model.onnx"


def test_a_tampered_file_is_refused_with_a_clear_error(tmp_path):
    make_bundle(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"graph bytes, changed")
    with pytest.raises(BundleError, match="model.onnx has sha256 .* the manifest says"):
        load_bundle(tmp_path)


def test_a_missing_file_or_manifest_is_refused(tmp_path):
    with pytest.raises(BundleError, match="manifest.json is missing"):
        load_bundle(tmp_path)
    make_bundle(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="tokenizer.json is missing"):
        load_bundle(tmp_path)

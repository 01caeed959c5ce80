"""The registry against SQLite and, when it answers, the real PostgreSQL on 127.0.0.1:5432."""
import uuid

import pytest
from sqlalchemy import create_engine, text

from omniforge_shared.artifacts import LocalArtifactStore
from omniforge_shared.registry import Registry, RegistryError

from omniforge_shared.bundle import write_bundle

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_answers() -> bool:
    try:
        with create_engine(PG_URL, connect_args={"connect_timeout": 2}).connect():
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def registry(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        schema = None
    else:
        if not postgres_answers():
            pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
        schema = f"of_test_{uuid.uuid4().hex[:8]}"
        admin = create_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    reg = Registry(url, LocalArtifactStore(tmp_path / "artifacts"))
    reg.upgrade()
    yield reg
    reg.close()
    if schema:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def bundle_dir(tmp_path, version="1", payload=b"graph"):
    path = tmp_path / f"bundle-{version}-{payload.hex()}"
    path.mkdir()
    (path / "model.onnx").write_bytes(payload)
    (path / "tokenizer.json").write_text('{"kind": "char", "chars": ["a"]}')
    write_bundle(path, name="m", version=version, task="text-generation", architecture={"family": "gpt"},
                 files={"model.onnx": "model", "tokenizer.json": "tokenizer"}, metrics={"val_loss": 1.5})
    return path


def test_register_copies_the_bundle_and_is_idempotent(registry, tmp_path):
    src = bundle_dir(tmp_path)
    first = registry.register_bundle(src)
    again = registry.register_bundle(src)
    assert first == again
    assert first.stage == "staging" and first.metrics == {"val_loss": 1.5}
    assert len(registry.list_versions("m")) == 1
    assert registry.bundle("m", "1").file("model").read_bytes() == b"graph"


def test_a_different_bundle_under_a_taken_version_is_refused(registry, tmp_path):
    registry.register_bundle(bundle_dir(tmp_path))
    with pytest.raises(RegistryError, match="already registered with another manifest"):
        registry.register_bundle(bundle_dir(tmp_path, payload=b"other"))


def test_promotion_archives_the_previous_production_version(registry, tmp_path):
    registry.register_bundle(bundle_dir(tmp_path, "1"), stage="production")
    registry.register_bundle(bundle_dir(tmp_path, "2", b"v2"))
    assert registry.get("m").version == "1"          # production wins over newer staging
    registry.set_stage("m", "2", "production")
    stages = {v.version: v.stage for v in registry.list_versions("m")}
    assert stages == {"1": "archived", "2": "production"}
    assert registry.next_version("m") == "3"


def test_unknown_names_and_stages_are_clear_errors(registry, tmp_path):
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        registry.get("nope")
    registry.register_bundle(bundle_dir(tmp_path))
    with pytest.raises(RegistryError, match="use one of"):
        registry.set_stage("m", "1", "live")
    with pytest.raises(RegistryError, match="no version '9'"):
        registry.get("m", "9")


def test_datasets_are_registered_once_per_content(registry, tmp_path):
    import json

    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "dataset.json").write_text(json.dumps({"format": "tokens", "counts": {"train_tokens": 10},
                                                "content_hash": "ab" * 32}))
    a = registry.register_dataset(ds, name="corpus")
    b = registry.register_dataset(ds, name="corpus")
    assert (a.version, b.version) == ("1", "1")
    assert registry.dataset_path("corpus").joinpath("dataset.json").exists()


def test_delete_version_removes_row_and_files(registry, tmp_path):
    info = registry.register_bundle(bundle_dir(tmp_path))
    path = registry.store.local_path(info.artifact_key)
    assert path.exists()
    registry.delete_version("m", "1")
    assert registry.list_versions("m") == [] and not path.exists()

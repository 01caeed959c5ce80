"""Which registered models a text service serves, and what it does with one it cannot load."""
import json
import shutil


def test_a_bundle_of_an_older_graph_format_is_skipped_and_the_others_served(tmp_path, tiny_bundle):
    from omniforge_shared.artifacts import LocalArtifactStore
    from omniforge_shared.registry import Registry
    from omniforge_text.server import make_pool
    from omniforge_text.settings import TextServiceSettings

    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["name"] = "legacy"
    del manifest["graph"]["format"]             # as bundles of the previous graph interface were
    (old / "manifest.json").write_text(json.dumps(manifest))
    db, artifacts = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "artifacts"
    registry = Registry(db, LocalArtifactStore(artifacts))
    registry.upgrade()
    registry.register_bundle(tiny_bundle, stage="production")
    registry.register_bundle(old, stage="production")
    registry.close()

    pool = make_pool(TextServiceSettings(database_url=db, artifact_root=artifacts, threads=1))
    try:
        pool.load_configured()
        assert sorted(pool.models) == ["tiny"]
        assert "omniforge export onnx" in pool.unservable["legacy:1"][1]
        assert pool.refresh() == []             # not retried (nor logged again) at every poll
        # exported again under the same version (as `bootstrap` does): served at the next poll
        registry = pool.registry
        registry.delete_version("legacy", "1")
        fixed = tmp_path / "fixed"
        shutil.copytree(tiny_bundle, fixed)
        manifest = json.loads((fixed / "manifest.json").read_text())
        manifest["name"] = "legacy"
        (fixed / "manifest.json").write_text(json.dumps(manifest))
        registry.register_bundle(fixed, stage="production")
        assert pool.refresh() == ["legacy:1"] and not pool.unservable
    finally:
        pool.stop()

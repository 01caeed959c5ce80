"""The `clip` recipe as a training job: train, evaluate, export both graphs, model card, register,
and the promotion gate on retrieval (run in-process, the way a worker runs it)."""
import pytest

TINY = dict(image_size=32, patch_size=4, n_layer=2, n_head=2, n_embd=32, batch_size=32, max_steps=40,
            warmup_steps=4, lr=3e-3, eval_interval=20, checkpoint_interval=20, threads=1)


@pytest.fixture()
def home(tmp_path, monkeypatch, tiny_images):
    monkeypatch.setenv("OMNIFORGE_HOME", str(tmp_path))
    for k in ("OMNIFORGE_DATABASE_URL", "OMNIFORGE_TRAINING_BROKER_URL"):
        monkeypatch.delenv(k, raising=False)
    from omniforge_shared.registry_settings import RegistrySettings

    registry = RegistrySettings().open()
    registry.register_dataset(tiny_images, name="tiny-images")
    yield registry
    registry.close()


def test_clip_job_registers_an_embedding_bundle_behind_the_gate(home):
    from omniforge_shared.jobs.store import JobStore
    from omniforge_training.jobs.pipeline import run_job

    store = JobStore(home)
    first = store.create(recipe="clip", dataset="tiny-images", params={**TINY, "promote": True},
                         resources={"queue": "cpu"}, model_name="clip-job", max_steps=40)
    run_job(first.id)
    assert store.get(first.id).state == "succeeded", store.get(first.id).error
    bundle = home.bundle("clip-job", "1")
    assert bundle.task == "embedding" and bundle.has("image-encoder") and bundle.has("text-encoder")
    assert (bundle.path / "MODEL_CARD.md").exists() and (bundle.path / "loss_curve.png").exists()
    assert "heldout_style_i2t_R@5" in bundle.manifest["metrics"]
    assert home.get("clip-job").stage == "production"
    logs = "\n".join(line[3] for line in store.logs(first.id))
    assert "heldout_style i2t R@1" in logs
    # a second, untrained model (lr 0) must not replace the production one
    second = store.create(recipe="clip", dataset="tiny-images", params={**TINY, "lr": 1e-12, "promote": True},
                          resources={"queue": "cpu"}, model_name="clip-job", max_steps=40)
    outcome = run_job(second.id)
    assert outcome["promotion"]["promoted"] is False and "heldout_style_i2t_R@5" in outcome["promotion"]["reason"]
    assert home.get("clip-job").version == "1"
    # a job can start from the registered model and keep its text side (the shared space) where it is
    third = store.create(recipe="clip", dataset="tiny-images",
                         params={**TINY, "max_steps": 4, "init_model": "clip-job:1", "lock_text": True},
                         resources={"queue": "cpu"}, model_name="clip-job", max_steps=4)
    run_job(third.id)
    assert store.get(third.id).state == "succeeded", store.get(third.id).error
    from safetensors.torch import load_file

    first_w = load_file(home.bundle("clip-job", "1").file("weights"))
    third_w = load_file(home.bundle("clip-job", "3").file("weights"))
    assert (first_w["text_proj.weight"] == third_w["text_proj.weight"]).all()
    assert not (first_w["image_proj.weight"] == third_w["image_proj.weight"]).all()
    # so its vectors live in the first model's space, and say so (an audio tower of that space pairs with it)
    assert home.bundle("clip-job", "3").space == ("clip-job", "1") == home.bundle("clip-job", "1").space
    assert home.bundle("clip-job", "2").space == ("clip-job", "2")
    missing = store.create(recipe="clip", dataset="tiny-images", params={**TINY, "init_model": "no-such-model"},
                           resources={"queue": "cpu"}, model_name="clip-job", max_steps=4)
    run_job(missing.id)
    assert store.get(missing.id).state == "failed" and "no-such-model" in store.get(missing.id).error

"""The `vocoder`, `tts`, `asr` and `audio-align` recipes as training jobs (in-process, as a worker runs them): each
trains, exports, writes its model card, registers, and the tts recipe voices itself with the
registered vocoder."""
import pytest

SMALL_ASR = dict(d_model=32, n_layers=1, n_heads=2, conv_kernel=7, batch_seconds=30, max_steps=3, warmup_steps=1,
                 eval_interval=0, checkpoint_interval=2, language_model=False, threads=1)


@pytest.fixture()
def home(tmp_path, monkeypatch, tiny_speech):
    monkeypatch.setenv("OMNIFORGE_HOME", str(tmp_path))
    for k in ("OMNIFORGE_DATABASE_URL", "OMNIFORGE_TRAINING_BROKER_URL"):
        monkeypatch.delenv(k, raising=False)
    from omniforge_shared.registry_settings import RegistrySettings

    registry = RegistrySettings().open()
    registry.register_dataset(tiny_speech, name="tiny-speech")
    yield registry
    registry.close()


def test_speech_recipes_register_bundles(home, tiny_clip_bundle):
    from omniforge_shared.jobs.store import JobStore
    from omniforge_training.jobs.pipeline import run_job

    store = JobStore(home)
    runs = [("vocoder", "voc-job", dict(dim=32, layers=1, batch_size=2, segment_frames=16, max_steps=3,
                                         eval_interval=0, checkpoint_interval=2, threads=1)),
            ("tts", "voice-job", dict(vocoder_model="voc-job", d_model=32, enc_layers=1, dec_layers=1,
                                      batch_frames=800, max_steps=3, eval_interval=0, checkpoint_interval=2,
                                      threads=1)),
            ("asr", "asr-job", SMALL_ASR)]
    for recipe, name, params in runs:
        job = store.create(recipe=recipe, dataset="tiny-speech", params=params, resources={"queue": "cpu"},
                           model_name=name, max_steps=3)
        run_job(job.id)
        assert store.get(job.id).state == "succeeded", (recipe, store.get(job.id).error)
        bundle = home.bundle(name, "1")
        assert (bundle.path / "MODEL_CARD.md").exists()
    assert home.bundle("voc-job", "1").has("weights")
    voice = home.bundle("voice-job", "1")
    assert voice.task == "text-to-speech" and voice.manifest["vocoder_model"]["name"] == "voc-job"
    assert [v["id"] for v in voice.manifest["voices"]] == ["joe"]
    asr = home.bundle("asr-job", "1")
    assert asr.task == "speech-recognition" and asr.has("acoustic-model") and not asr.has("language-model")
    assert asr.has("weights")
    # the audio tower starts from that recognizer's encoder and joins a registered CLIP's space
    home.register_bundle(tiny_clip_bundle)
    job = store.create(recipe="audio-align", dataset="tiny-speech", resources={"queue": "cpu"},
                       params=dict(clip_model="tiny-clip", asr_model="asr-job", tune_layers=1, batch_seconds=30,
                                   max_steps=3, warmup_steps=1, eval_interval=0, checkpoint_interval=2, threads=1),
                       model_name="tower-job", max_steps=3)
    run_job(job.id)
    assert store.get(job.id).state == "succeeded", store.get(job.id).error
    tower = home.bundle("tower-job", "1")
    assert tower.task == "audio-embedding" and tower.manifest["space"] == {"name": "tiny-clip", "version": "1"}
    assert tower.manifest["asr_model"] == {"name": "asr-job", "version": "1"}
    assert "heldout_voice_tower_r1" in tower.manifest["metrics"] and (tower.path / "MODEL_CARD.md").exists()


def test_a_recognizer_can_be_trained_further_from_its_weights(tmp_path, tiny_speech):
    """`--init`: a second run starts where the first one's weights are, not from scratch."""
    from omniforge_training.train_asr import ASRTrainConfig, train_asr

    small = {k: v for k, v in SMALL_ASR.items() if k not in ("language_model", "eval_interval")}
    small.update(max_steps=12, warmup_steps=2, lr=3e-3, augment=False, eval_interval=0)
    first = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "a"), **small), progress=False,
                      log=lambda m: None)
    logs = []
    again = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "b"), init=str(tmp_path / "a"),
                                     **{**small, "max_steps": 1}), progress=False, log=logs.append)
    fresh = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "c"), **{**small, "max_steps": 1}),
                      progress=False, log=lambda m: None)
    assert any("starting from the weights" in m for m in logs) and first["steps"] == 12
    assert again["final_loss"] < fresh["final_loss"]          # the same first batch, from trained weights
    bigger = {**small, "d_model": 48}
    with pytest.raises(ValueError, match="different recognizer"):
        train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "d"), init=str(tmp_path / "a"), **bigger),
                  progress=False, log=lambda m: None)


def test_a_recognizer_trains_on_extra_speech_datasets(tmp_path, tiny_speech):
    """`--extra-data`: another dataset's training utterances join the batches; the held-out voice never does,
    nor any utterance of a validation or test sentence."""
    from omniforge_training.data.speech import SpeechWriter, load_speech
    from omniforge_training.train_asr import ASRTrainConfig, train_asr

    starter = load_speech(tiny_speech)

    def extra(path, speaker, items=None):
        w = SpeechWriter(path, sample_rate=16_000)
        for k, it in enumerate(items or starter.split("train")[:5] + starter.split("test")[:2]):
            w.add(f"x{k}", starter.audio(it)[::2].copy(), it["text"], speaker, "train", transcript=it["transcript"])
        w.finish({"name": f"extra-{speaker}"})
        return str(path)

    small = {k: v for k, v in SMALL_ASR.items() if k not in ("language_model", "eval_interval")}
    small.update(max_steps=1, augment=False, eval_interval=0)
    alone = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "a"), **small), progress=False,
                      log=lambda m: None)
    more = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "b"),
                                    extra_data=[extra(tmp_path / "e", "other")], **small), progress=False,
                     log=lambda m: None)
    # the two that say test sentences of the starter corpus are left out
    assert more["extra_datasets"][0]["utterances"] == 5 and more["extra_datasets"][0]["name"] == "extra-other"
    assert more["extra_datasets"][0]["left_out_as_heldout_sentences"] == 2
    assert more["train_hours"] > alone["train_hours"]
    with pytest.raises(ValueError, match="held-out voice"):
        train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "c"),
                                 extra_data=[extra(tmp_path / "h", "slt")], **small), progress=False, log=lambda m: None)
    # refused too where every utterance of that voice would have been filtered out anyway
    with pytest.raises(ValueError, match="held-out voice"):
        train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "d"),
                                 extra_data=[extra(tmp_path / "t", "slt", starter.split("test")[:2])], **small),
                  progress=False, log=lambda m: None)


def test_a_recognizer_starter_trained_further_records_its_lineage(tmp_path, tiny_speech):
    """Packaging a run that started from a starter keeps what that starter was (version, steps,
    served quality) and the steps and wall time of the whole lineage."""
    from omniforge_training.starter.speech import package_asr_starter
    from omniforge_training.train_asr import ASRTrainConfig, train_asr

    small = {k: v for k, v in SMALL_ASR.items() if k not in ("language_model", "eval_interval")}
    small.update(max_steps=3, warmup_steps=1, augment=False, eval_interval=0)
    quiet = {"progress": False, "log": lambda m: None}
    first = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "a"), **small), **quiet)
    starter = tmp_path / "starter"
    package_asr_starter(tmp_path / "a", tiny_speech, version="1", out=starter)
    second = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "b"), init=str(starter),
                                      **{**small, "max_steps": 2}), **quiet)
    m = package_asr_starter(tmp_path / "b", tiny_speech, version="2", out=starter)
    assert m["version"] == "2" and m["trained_from"]["version"] == "1" and m["trained_from"]["steps"] == 3
    assert m["total_steps"] == 5
    assert m["total_wall_s"] == pytest.approx(first["wall_s"] + second["wall_s"], abs=0.2)
    assert "trained_from" not in package_asr_starter(tmp_path / "a", tiny_speech, version="1", out=tmp_path / "fresh")


def test_a_stopped_recognizer_run_resumes_exactly(tmp_path, tiny_speech):
    """Augmented batches are made a step ahead in a background thread and dropout draws its own
    masks: a run stopped at step 3 and started again ends with the weights of one that never stopped."""
    import torch
    from safetensors.torch import load_file

    from omniforge_training.train_asr import ASRTrainConfig, train_asr

    small = {k: v for k, v in SMALL_ASR.items() if k not in ("language_model",)}
    small.update(max_steps=6, checkpoint_interval=1, augment=True)
    quiet = {"progress": False, "log": lambda m: None}
    straight = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "a"), **small), **quiet)
    stopped = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "b"), **small),
                        on_step=lambda report: report.step < 3, **quiet)
    resumed = train_asr(ASRTrainConfig(data=str(tiny_speech), out=str(tmp_path / "b"), **small), **quiet)
    assert stopped["steps"] == 3 and resumed["steps"] == straight["steps"] == 6
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

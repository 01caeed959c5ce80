"""The audio tower: the recognizer's encoder inside it, training into a text tower's space, its
ONNX export and the fusion service's engine for it."""
import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from omniforge_shared.bundle import load_bundle
from omniforge_shared.encoders import TextEmbedder
from omniforge_training.checkpoint import load_weights
from omniforge_training.models.audio_tower import AudioTower, AudioTowerConfig
from omniforge_training.models.conformer import ASRConfig, ConformerCTC
from omniforge_training.starter.speech import STARTER_ASR_DIR


def test_the_tower_runs_the_recognizers_encoder_unchanged():
    from safetensors.torch import load_file

    cfg = ASRConfig.from_dict(json.loads((STARTER_ASR_DIR / "config.json").read_text())["model"])
    asr = ConformerCTC(cfg).eval()
    load_weights(STARTER_ASR_DIR / "model.safetensors", asr)
    tower = AudioTower(AudioTowerConfig(asr=cfg, embed_dim=64)).eval()
    tower.load_recognizer({k: v.float() for k, v in load_file(str(STARTER_ASR_DIR / "model.safetensors")).items()})
    feats, lengths = torch.randn(2, 300, cfg.n_mels), torch.tensor([300, 180])
    with torch.no_grad():
        logp, olens = asr(feats, lengths)
        x, keep, tl = tower.encode(feats, lengths)
        mine = torch.log_softmax(asr.head(x), -1)
        # the cached half plus the rest equals the whole
        half, _, _ = tower.encode(feats, lengths, upto=5)
        whole = tower.embed_encoded(half, keep, start=5)
        direct = tower(feats, lengths)
    assert torch.equal(olens, tl)
    for i, n in enumerate(olens.tolist()):
        assert torch.allclose(mine[i, :n], logp[i, :n], atol=1e-5)
    assert torch.allclose(whole, direct, atol=1e-5)
    assert torch.allclose(direct.norm(dim=-1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        AudioTower(AudioTowerConfig(asr=ASRConfig(d_model=64, n_heads=4), embed_dim=64)).load_recognizer(
            {k: v.float() for k, v in load_file(str(STARTER_ASR_DIR / "model.safetensors")).items()})


@pytest.fixture(scope="module")
def tower_run(tiny_audio_tower_run):
    return tiny_audio_tower_run


def test_training_moves_speech_to_its_sentences_text_vector(tower_run):
    summary = json.loads((tower_run / "summary.json").read_text())
    hist = summary["history"]
    assert summary["steps"] == summary["max_steps"] and hist
    assert summary["trained_params"] < summary["params"]          # the encoder's lower blocks stay frozen
    first, last = hist[0], hist[-1]
    assert last["val_mean_cosine"] > first["val_mean_cosine"]
    q = summary["quality"]
    for group in ("all", "heldout_voice", "training_voices"):
        assert {"tower", "cascade"} <= set(q[group])
        assert 0.0 <= q[group]["tower"]["r1"] <= 1.0 and q[group]["tower"]["candidates"] >= 1
    assert "wer" in q["cascade_recognizer_greedy"]


def _wav(x: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue()


def test_exported_tower_matches_torch_and_serves_audio_bytes(tiny_audio_tower_bundle, tiny_audio_tower_run,
                                                             tiny_clip_bundle, tiny_speech):
    from omniforge_fusion.audio_tower import AudioTowerEngine
    from omniforge_fusion.engine import AudioUnavailable, EmbeddingEngine
    from omniforge_shared.audio import AudioError
    from omniforge_training.data.speech import load_speech

    bundle = load_bundle(tiny_audio_tower_bundle)
    assert bundle.task == "audio-embedding"
    assert bundle.manifest["space"] == {"name": "tiny-clip", "version": "1"}
    engine = AudioTowerEngine(bundle, threads=1)
    assert engine.space == ("tiny-clip", "1")
    ds = load_speech(tiny_speech)
    items = ds.split("train")[:6]
    clips = [_wav(ds.audio(it), ds.sample_rate) for it in items]
    vecs = engine.embed(clips)
    assert vecs.shape == (6, 256) and np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # the served vectors are the training ones: each clip is nearer its own sentence than most others
    texts = sorted({it["text"] for it in ds.split("train")})
    tv = TextEmbedder(load_bundle(tiny_clip_bundle), threads=1)(texts)
    ranks = [int((tv @ v > tv[texts.index(it["text"])] @ v).sum()) for v, it in zip(vecs, items)]
    assert np.mean(ranks) < len(texts) / 2, ranks
    # bad audio is refused with the decoder's status, and a model without a tower refuses audio
    with pytest.raises(AudioError):
        engine.embed([b"RIFF....WAVEnot really"])
    with pytest.raises(AudioError, match="silent"):
        engine.embed([_wav(np.zeros(16_000, np.float32), 16_000)])
    clip_engine = EmbeddingEngine(load_bundle(tiny_clip_bundle), threads=1)
    with pytest.raises(AudioUnavailable, match="audio-align"):
        clip_engine.embed([("audio", clips[0])])
    mixed = clip_engine.embed([("text", "red heart"), ("audio", clips[0])], audio=engine.embed)
    # alone or padded in a batch of six, a clip gets the same vector (fp32 rounding aside)
    assert float(mixed[1] @ vecs[0]) > 0.9999

"""The speech models' shapes and invariants, and their ONNX exports against torch."""
import json

import numpy as np
import pytest
import torch

from omniforge_training.checkpoint import save_weights
from omniforge_training.models.conformer import ASRConfig, ConformerCTC, Dropout, encode_text, out_lengths
from omniforge_training.models.fastspeech import FastSpeech, TTSConfig, regulate
from omniforge_training.models.vocoder import InverseSTFT, Vocoder, VocoderConfig

torch.set_num_threads(1)


def small_asr() -> ConformerCTC:
    torch.manual_seed(0)
    return ConformerCTC(ASRConfig(d_model=48, n_layers=2, n_heads=2, subsample_channels=16, dropout=0.0)).eval()


def test_conformer_output_length_and_padding_do_not_change_an_utterance():
    model = small_asr()
    x = torch.randn(1, 203, 80)
    alone, n_alone = model(x, torch.tensor([203]))
    padded = torch.cat([x, torch.randn(1, 97, 80) * 5], dim=1)            # loud junk after the end
    batch, n_batch = model(torch.cat([padded, torch.randn(1, 300, 80)]), torch.tensor([203, 300]))
    assert n_alone.tolist() == out_lengths(torch.tensor([203])).tolist() == [51]
    assert n_batch.tolist() == [51, 75]
    assert torch.allclose(alone[0, :51], batch[0, :51], atol=1e-4)
    assert torch.allclose(alone.exp().sum(-1), torch.ones(1, 51), atol=1e-4)
    for n in (199, 200, 201, 202):             # every remainder of the two strides
        alone, k = model(x[:, :n], torch.tensor([n]))
        batch, _ = model(torch.cat([padded, torch.randn(1, 300, 80)]), torch.tensor([n, 300]))
        assert torch.allclose(alone[0, :int(k)], batch[0, :int(k)], atol=1e-4), n


def test_the_recognizers_dropout_drops_its_share_and_keeps_the_mean():
    drop = Dropout(0.1)
    x = torch.ones(64, 100, 144)
    y = drop(x)
    dropped = float((y == 0).float().mean())
    assert abs(dropped - 0.1) < 0.005 and abs(float(y.mean()) - 1.0) < 0.01
    assert not torch.equal(y, drop(x))                       # a fresh mask each call
    assert torch.equal(drop.eval()(x), x)


def test_text_encoding_keeps_only_known_characters():
    assert encode_text("it's ok!") == [11, 22, 2, 21, 1, 17, 13]          # 0 is the blank, 1 the space


def test_asr_export_matches_torch(tmp_path):
    from omniforge_training.export_asr import export_asr_bundle

    model = small_asr()
    save_weights(tmp_path / "model.safetensors", model)
    (tmp_path / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    bundle = export_asr_bundle(tmp_path, tmp_path / "bundle", name="t", version="1", with_lm=False, log=lambda m: None)
    assert bundle.task == "speech-recognition" and bundle.manifest["metrics"]["onnx_parity"] < 1e-3
    assert bundle.manifest["decoding"]["frame_seconds"] == pytest.approx(0.04)


def test_the_recognizer_reads_each_window_through_its_most_confident_warp(tmp_path):
    from omniforge_audio.asr import ASREngine
    from omniforge_shared.audio import log_mel, mel_filterbank
    from omniforge_training.export_asr import DECODING, export_asr_bundle

    model = small_asr()
    save_weights(tmp_path / "model.safetensors", model)
    (tmp_path / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    bundle = export_asr_bundle(tmp_path, tmp_path / "bundle", name="t", version="1", with_lm=False, log=lambda m: None)
    assert bundle.manifest["decoding"]["warps"] == DECODING["warps"]
    x = (np.random.default_rng(0).standard_normal(24_000) * 0.1).astype(np.float32)
    warps = bundle.manifest["decoding"]["warps"]
    singles = {w: ASREngine(bundle, threads=1, warps=[w]) for w in warps}
    readings = {w: e.logprobs(x) for w, e in singles.items()}
    plain = singles[1.0]
    assert np.allclose(readings[1.0], plain.batcher(log_mel(x, plain.mel))[0])     # warp 1: the plain filterbank
    assert np.allclose(mel_filterbank(plain.mel, 1.0), mel_filterbank(plain.mel))
    best = max(warps, key=lambda w: readings[w].max(axis=1).mean())
    searching = ASREngine(bundle, threads=1)
    assert np.allclose(searching.logprobs(x), readings[best], atol=1e-5)
    assert searching.warp_picks == {best: 1}
    assert searching.gauges()["asr_warped_windows"] == float(best != 1.0)
    with pytest.raises(ValueError, match="warps must lie in"):
        ASREngine(bundle, threads=1, warps=[0.1])
    for e in [*singles.values(), searching]:
        e.stop()


def test_length_regulator_repeats_each_state_for_its_frames():
    h = torch.arange(3, dtype=torch.float32)[None, :, None].expand(1, 3, 2)
    out = regulate(h, torch.tensor([[2, 0, 3]]), 6)
    assert out[0, :, 0].tolist() == [0, 0, 2, 2, 2, 0]          # the 6th frame is past the end: zeros


def test_inverse_stft_is_torch_istft():
    x = torch.randn(2, 256 * 40)
    w = torch.hann_window(1024)
    spec = torch.stft(x, 1024, 256, window=w, return_complex=True)
    ours = InverseSTFT(1024, 256)(spec.real, spec.imag)
    assert torch.allclose(ours, torch.istft(spec, 1024, 256, window=w), atol=1e-4)
    assert torch.allclose(ours, x[:, :ours.shape[1]], atol=1e-4)


def test_tts_export_matches_torch(tmp_path):
    from omniforge_training.export_tts import export_tts_bundle

    torch.manual_seed(0)
    tts = FastSpeech(TTSConfig(d_model=32, n_heads=2, enc_layers=1, dec_layers=1, ff_dim=64, predictor_dim=32))
    voc = Vocoder(VocoderConfig(dim=32, intermediate=64, layers=2))
    for sub, model, extra in (("tts", tts, {"speakers": ["joe"]}), ("voc", voc, {})):
        (tmp_path / sub).mkdir()
        save_weights(tmp_path / sub / "model.safetensors", model)
        (tmp_path / sub / "config.json").write_text(json.dumps({"model": model.config.to_dict(), **extra}))
    bundle = export_tts_bundle(tmp_path / "tts", tmp_path / "voc", tmp_path / "bundle", name="v", version="1",
                               log=lambda m: None)
    assert bundle.task == "text-to-speech" and bundle.manifest["voices"][0]["id"] == "joe"
    assert max(v for k, v in bundle.manifest["metrics"].items() if k.startswith("parity")) < 2e-3


def test_the_lexicon_word_list_keeps_plain_lowercase_words(tmp_path):
    from omniforge_training.export_asr import dictionary_words

    words = tmp_path / "words"
    words.write_text("Amiable\namiable\ncat's\nO'Brien's\nnaïve\nX-ray\nspades\n", encoding="utf-8")
    assert dictionary_words(words, log=lambda m: None) == ["amiable", "cat's", "spades"]
    said = []
    assert dictionary_words(tmp_path / "missing", log=said.append) == [] and "wamerican" in said[0]

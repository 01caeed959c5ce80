"""The audio tower engine: an `audio-embedding` bundle's ONNX graph behind `embed(list of bytes)`.

Audio is decoded and normalised by `omniforge_shared.audio` (the one decoder untrusted audio
bytes reach) exactly as the recognizer and the tower's training see it; log-mel in numpy. The
tower belongs to one embedding model (`space` in its manifest): its vectors are compared with
that model's text and image vectors only.
"""
from __future__ import annotations

import numpy as np

from omniforge_shared.audio import AudioLimits, MelConfig, log_mel, mel_filterbank, prepare_audio
from omniforge_shared.bundle import Bundle
from omniforge_shared.encoders import cpu_session

MAX_QUERY_SECONDS = 60.0
MAX_BATCH = 16


class AudioTowerEngine:
    backend_name = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 0, max_bytes: int = 25 * 2**20,
                 max_seconds: float = MAX_QUERY_SECONDS) -> None:
        self.bundle = bundle
        m = bundle.manifest
        self.space = bundle.space
        self.dimensions = int(m["embedding"]["dimensions"])
        self.mel = MelConfig(**m["preprocess"]["mel"])
        self.rate = int(m["preprocess"]["sample_rate"])
        self.fbank = mel_filterbank(self.mel)
        self.limits = AudioLimits(max_bytes=max_bytes, max_seconds=max_seconds)
        self.session = cpu_session(bundle.file("audio-encoder"), threads)

    def features(self, data: bytes) -> np.ndarray:
        """Bytes -> (frames, n_mels); raises AudioError (with its HTTP status) for audio we will not use."""
        return log_mel(prepare_audio(data, self.rate, limits=self.limits), self.mel, self.fbank)

    def embed_features(self, feats: list[np.ndarray]) -> np.ndarray:
        out = []
        for s in range(0, len(feats), MAX_BATCH):
            group = feats[s:s + MAX_BATCH]
            x = np.zeros((len(group), max(len(f) for f in group), self.mel.n_mels), np.float32)
            for i, f in enumerate(group):
                x[i, :len(f)] = f
            lengths = np.array([len(f) for f in group], np.int64)
            out.append(self.session.run(["audio_embeds"], {"features": x, "lengths": lengths})[0])
        return np.concatenate(out) if out else np.zeros((0, self.dimensions), np.float32)

    def embed(self, clips: list[bytes]) -> np.ndarray:
        return self.embed_features([self.features(c) for c in clips])

    def gauges(self) -> dict[str, float]:
        return {}

    def retire(self) -> None:
        pass

    def stop(self) -> None:
        pass

"""flite through its library: the same speech as the `flite` command, and when each phone starts.

The starter corpus records flite voices with `flite -voice V --setf duration_stretch=S -t TEXT`.
The library, given the same voice and stretch, writes the same samples (the command is a thin
wrapper around `flite_synth_text`), and the utterance it returns keeps its `Segment` relation:
every phone with the time it ends. So a flite recording can be timed by flite itself, as the
espeak-ng recordings are timed by espeak-ng, instead of by warping it onto another voice.

flite names phones in the CMU US set (`ax`, `hh`, `pau`); `IPA` writes them as espeak-ng's
American English does, so the timed phones can be mapped onto our phonemiser's symbols by
sequence alignment (`tts_features.align_durations`), which tolerates where the two lexicons
disagree.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

INSTALL_HINT = "install flite (`apt-get install flite`, which brings libflite1)"

# CMU US phones -> IPA as espeak-ng's en-us writes it; a pause is a space
IPA = {
    "aa": "ɑː", "ae": "æ", "ah": "ʌ", "ao": "ɔː", "aw": "aʊ", "ax": "ə", "ay": "aɪ", "b": "b", "ch": "tʃ",
    "d": "d", "dh": "ð", "eh": "ɛ", "er": "ɚ", "ey": "eɪ", "f": "f", "g": "ɡ", "hh": "h", "ih": "ɪ",
    "iy": "iː", "jh": "dʒ", "k": "k", "l": "l", "m": "m", "n": "n", "ng": "ŋ", "ow": "oʊ", "oy": "ɔɪ",
    "p": "p", "r": "ɹ", "s": "s", "sh": "ʃ", "t": "t", "th": "θ", "uh": "ʊ", "uw": "uː", "v": "v",
    "w": "w", "y": "j", "z": "z", "zh": "ʒ", "pau": "",
}


class _Wave(ctypes.Structure):                 # cst_wave
    _fields_ = [("type", ctypes.c_char_p), ("sample_rate", ctypes.c_int), ("num_samples", ctypes.c_int),
                ("num_channels", ctypes.c_int), ("samples", ctypes.POINTER(ctypes.c_short))]


class Flite:
    """The flite library for the process; calls are locked (flite keeps global state). Voices
    are registered once each, by the names the command takes (`rms`, `awb`, `slt`, `kal16`)."""

    _lock = threading.Lock()
    _lib = None
    _libc = None
    _voices: dict[str, int] = {}

    @classmethod
    def _load(cls):
        if cls._lib is None:
            try:
                lib = ctypes.CDLL("libflite.so.1", mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise RuntimeError(f"libflite not found; {INSTALL_HINT}") from e
            p, s = ctypes.c_void_p, ctypes.c_char_p
            for name, restype, argtypes in (
                    ("flite_synth_text", p, [s, p]), ("utt_relation", p, [p, s]), ("relation_head", p, [p]),
                    ("item_next", p, [p]), ("item_feat_string", s, [p, s]), ("item_feat_float", ctypes.c_float, [p, s]),
                    ("utt_wave", p, [p]), ("delete_utterance", None, [p]),
                    ("flite_feat_set_float", None, [p, s, ctypes.c_float])):
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, argtypes
            lib.flite_init()
            cls._libc = ctypes.CDLL(None)
            cls._libc.srand.argtypes = [ctypes.c_uint]
            cls._lib = lib
        return cls._lib

    @classmethod
    def _voice(cls, name: str) -> int:
        if name not in cls._voices:
            cls._load()
            full = f"cmu_us_{name}"
            try:
                vlib = ctypes.CDLL(f"libflite_{full}.so.1", mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                raise ValueError(f"flite has no voice {name!r} here ({INSTALL_HINT})") from e
            register = getattr(vlib, f"register_{full}")
            register.restype, register.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
            cls._voices[name] = register(None)
            if not cls._voices[name]:
                raise RuntimeError(f"flite could not load its voice {name!r}")
        return cls._voices[name]

    @classmethod
    def synthesise(cls, text: str, voice: str, *, duration_stretch: float = 1.0
                   ) -> tuple[np.ndarray, int, list[tuple[str, float]]]:
        """-> (16-bit samples, sample rate, (CMU phone, start in seconds) per phone), as
        `flite -voice VOICE --setf duration_stretch=S -t TEXT` says it."""
        with cls._lock:
            lib, v = cls._load(), cls._voice(voice)
            features = ctypes.c_void_p.from_address(v + ctypes.sizeof(ctypes.c_void_p)).value  # cst_voice.features
            lib.flite_feat_set_float(features, b"duration_stretch", float(duration_stretch))
            cls._libc.srand(1)       # clustergen voices excite with libc's rand(): start it where a new process does
            utt = lib.flite_synth_text(text.encode("utf-8"), v)
            if not utt:
                raise RuntimeError(f"flite could not say {text[:40]!r}")
            try:
                phones, start = [], 0.0
                item = lib.relation_head(lib.utt_relation(utt, b"Segment"))
                while item:
                    end = float(lib.item_feat_float(item, b"end"))
                    phones.append((lib.item_feat_string(item, b"name").decode(), start))
                    start, item = end, lib.item_next(item)
                wave = _Wave.from_address(lib.utt_wave(utt))
                samples = np.ctypeslib.as_array(wave.samples, (wave.num_samples * wave.num_channels,)).copy()
                return samples, int(wave.sample_rate), phones
            finally:
                lib.delete_utterance(utt)


def flite_events(phones: list[tuple[str, float]], rate: int) -> list[tuple[str, int]]:
    """flite's phones -> (IPA, start sample at `rate`), as `tts_features.events_durations` takes them."""
    return [(IPA.get(name, name), int(round(start * rate))) for name, start in phones]

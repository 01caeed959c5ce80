"""Text -> IPA phoneme symbols with espeak-ng (the Debian library, through ctypes), and the symbol
ids the text-to-speech models take.

    phonemise("set a timer, please.") -> [["s", "ˈ", "ɛ", "t", " ", "ɐ", ..., ",", " ", "p", ..., "."]]

One list per sentence; each clause's phonemes followed by its punctuation (a space after , : ;),
decomposed into Unicode code points (NFD), language-switch flags removed. `ids` interleaves a pad
after every symbol between BOS and EOS; the acoustic model predicts a duration for each id,
pads included (they carry the transitions).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
import threading
import unicodedata

PAD, BOS, EOS = "_", "^", "$"
PUNCTUATION = " !'(),-.:;?"
IPA = ("abcdefhijklmnopqrstuvwxyz"
       "æçðøħŋœǀǁǂǃɐɑɒɓɔɕɖɗɘəɚɛɜɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ"
       "\u0303\u0327\u0329\u032a\u032f\u0361")     # combining: nasal tilde, cedilla, syllabic, dental, non-syllabic, tie
SYMBOLS = (PAD, BOS, EOS) + tuple(PUNCTUATION) + tuple(IPA)
SYMBOL_IDS = {s: i for i, s in enumerate(SYMBOLS)}
INSTALL_HINT = "install espeak-ng (Debian: apt-get install espeak-ng)"


class PhonemiserError(RuntimeError):
    pass


class Espeak:
    """One espeak-ng instance for the process (the library is not thread-safe: calls are locked)."""

    _lock = threading.Lock()
    _lib = None
    _voice = None

    @classmethod
    def _load(cls):
        if cls._lib is None:
            name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
            try:
                lib = ctypes.cdll.LoadLibrary(name)
            except OSError as e:
                raise PhonemiserError(f"libespeak-ng not found; {INSTALL_HINT}") from e
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
            lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
            if lib.espeak_Initialize(0x02, 0, None, 0) < 0:       # AUDIO_OUTPUT_SYNCHRONOUS, default data path
                raise PhonemiserError(f"espeak-ng failed to initialise; {INSTALL_HINT}")
            cls._lib = lib
        return cls._lib

    @classmethod
    def clauses(cls, text: str, voice: str = "en-us") -> list[tuple[str, str]]:
        """(IPA phonemes, terminator) per clause; the terminator is read off the text consumed."""
        with cls._lock:
            lib = cls._load()
            if voice != cls._voice:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise PhonemiserError(f"espeak-ng has no voice {voice!r}")
                cls._voice = voice
            data = text.encode("utf-8")
            buf = ctypes.create_string_buffer(data)
            ptr = ctypes.c_void_p(ctypes.addressof(buf))
            start = ctypes.addressof(buf)
            out, consumed = [], 0
            while ptr.value:
                phonemes = lib.espeak_TextToPhonemes(ctypes.byref(ptr), 1, 0x02)   # UTF-8 in, IPA out
                end = (ptr.value - start) if ptr.value else len(data)
                chunk = data[consumed:end].decode("utf-8", "ignore")
                consumed = end
                marks = re.findall(r"[.!?,:;]", chunk)
                out.append(((phonemes or b"").decode("utf-8", "ignore"), marks[-1] if marks else ""))
            return out


def phonemise(text: str, voice: str = "en-us") -> list[list[str]]:
    """Text (already normalised: numbers spelled out) -> symbols, one list per sentence."""
    sentences, current = [], []
    for phonemes, term in Espeak.clauses(text, voice):
        phonemes = re.sub(r"\([^)]+\)", "", phonemes).strip()
        if not phonemes and not term:
            continue
        s = phonemes + term + (" " if term in (",", ":", ";") else "")
        current.extend(unicodedata.normalize("NFD", s))
        if term in (".", "!", "?"):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return [s for s in sentences if any(c not in PUNCTUATION for c in s)]


def ids(symbols: list[str]) -> list[int]:
    """BOS, then each known symbol followed by a pad, then EOS (unknown symbols are dropped)."""
    out = [SYMBOL_IDS[BOS], SYMBOL_IDS[PAD]]
    for s in symbols:
        if s in SYMBOL_IDS:
            out += [SYMBOL_IDS[s], SYMBOL_IDS[PAD]]
    return out + [SYMBOL_IDS[EOS]]

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
import os
import pickle
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


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """espeak_EVENT (speak_lib.h)."""
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


class _Voice(ctypes.Structure):
    """espeak_VOICE (speak_lib.h)."""
    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p),
                ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
                ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p)]


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EVENT_PHONEME, _RATE, _PITCH = 7, 1, 3


class Espeak:
    """One espeak-ng instance for the process (the library is not thread-safe: calls are locked).
    It is initialised with phoneme events named in IPA, so `synthesise` can say when each phoneme
    starts."""

    _lock = threading.Lock()
    _lib = None
    _voice = None
    _sink: list | None = None
    _callback = None

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
            # AUDIO_OUTPUT_SYNCHRONOUS, default data path; phoneme events, named in IPA; don't exit on error
            if lib.espeak_Initialize(0x02, 0, None, 0x0001 | 0x0002 | 0x8000) < 0:
                raise PhonemiserError(f"espeak-ng failed to initialise; {INSTALL_HINT}")
            cls._callback = _SYNTH_CALLBACK(cls._on_audio)
            lib.espeak_SetSynthCallback(cls._callback)
            cls._lib = lib
        return cls._lib

    @classmethod
    def _on_audio(cls, wav, n, events) -> int:
        if cls._sink is None:
            return 0
        if n > 0:
            cls._sink[0].append(bytes(ctypes.string_at(wav, 2 * n)))
        i = 0
        while events[i].type != 0:                   # espeakEVENT_LIST_TERMINATED
            e = events[i]
            if e.type == _EVENT_PHONEME:
                cls._sink[1].append((bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace"), int(e.sample)))
            i += 1
        return 0

    @classmethod
    def _set_voice(cls, lib, voice: str) -> None:
        """A voice by name, else (as the espeak-ng command does) by language: `en-gb+f2` is no voice's
        name but the en-gb language with the f2 variant."""
        if voice != cls._voice:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                select = _Voice(languages=voice.encode())
                if lib.espeak_SetVoiceByProperties(ctypes.byref(select)) != 0:
                    raise PhonemiserError(f"espeak-ng has no voice {voice!r}")
            cls._voice = voice

    @classmethod
    def synthesise(cls, text: str, voice: str = "en-us", *, rate: int = 175, pitch: int = 50) -> tuple[bytes, list[tuple[str, int]]]:
        """espeak-ng's own speech for `text` (16-bit PCM at 22,050 Hz, sample for sample as
        `espeak-ng -v voice -s rate -p pitch -w` writes it, less its trailing audio) and each
        phoneme's start: (IPA, sample), in order; a pause is an empty name.

        The synthesiser keeps filter state from one utterance to the next, so each utterance is
        spoken in a child process forked for it from this one, where nothing was spoken yet."""
        with cls._lock:
            cls._load()
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:                     # the child: speak, send, exit without cleanup
                code = 1
                try:
                    os.close(read)
                    with os.fdopen(write, "wb") as out:
                        out.write(pickle.dumps(cls._speak(text, voice, rate, pitch)))
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            with os.fdopen(read, "rb") as got:
                data = got.read()
            _, status = os.waitpid(pid, 0)
        if status != 0 or not data:
            raise PhonemiserError(f"espeak-ng could not speak {text[:40]!r} with voice {voice!r}")
        return pickle.loads(data)

    @classmethod
    def _speak(cls, text: str, voice: str, rate: int, pitch: int) -> tuple[bytes, list[tuple[str, int]]]:
        lib = cls._lib
        ctypes.CDLL(None).srand(1)           # the C library's noise starts as in a fresh process
        cls._set_voice(lib, voice)
        lib.espeak_SetParameter(_RATE, int(rate), 0)
        lib.espeak_SetParameter(_PITCH, int(pitch), 0)
        cls._sink = ([], [])
        data = text.encode("utf-8")
        # position 0 (POS_CHARACTER), no end, espeakCHARS_AUTO
        if lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, 0, None, None) != 0:
            raise PhonemiserError(f"espeak-ng could not speak {text[:40]!r}")
        lib.espeak_Synchronize()
        return b"".join(cls._sink[0]), cls._sink[1]

    @classmethod
    def clauses(cls, text: str, voice: str = "en-us") -> list[tuple[str, str]]:
        """(IPA phonemes, terminator) per clause; the terminator is read off the text consumed."""
        with cls._lock:
            lib = cls._load()
            cls._set_voice(lib, voice)
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

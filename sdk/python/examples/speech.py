"""Speech: say a sentence in each of two voices, then transcribe it back with word times."""
from omniforge_sdk import Client

with Client() as client:
    voices = client.audio.voices.list()
    print("voices:", ", ".join(v.id for v in voices))
    for voice in voices[:2]:
        wav = client.audio.speech.create(input="Please call me at nine in the morning.", voice=voice.id)
        heard = client.audio.transcriptions.create(file=wav)
        words = " ".join(f"{w['word']}@{w['start']:.2f}s" for w in heard.words)
        print(f"{voice.id}: {len(wav):,} bytes of WAV -> {heard.text!r} [{words}]")

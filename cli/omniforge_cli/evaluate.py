"""`omniforge eval ...`: quality of exported models, measured through the engines the services run."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from .context import console, fail, open_registry

app = typer.Typer(help="Measure exported models.", no_args_is_help=True)


def _bundle_dir(ref: str) -> Path:
    path = Path(ref)
    if path.is_dir():
        return path
    name, _, version = ref.partition(":")
    return open_registry().bundle(name, version or None).path


def _save_decoding(run_dir: Path, best: dict) -> None:
    """Writes the tuned beam-search settings into a run's config.json: its next export uses them."""
    path = run_dir / "config.json"
    config = json.loads(path.read_text())
    config["decoding"] = {"lm_weight": best["lm_weight"], "word_score": best["word_score"],
                          "tuned_on": {"split": "val", "wer": best["wer"]}}
    path.write_text(json.dumps(config, indent=2))
    console.print(f"beam-search settings written to {path}; export the run again to use them")


@app.command("warps")
def eval_warps_cmd(asr: str = typer.Option("asr-starter", help="a recognizer: registered `name[:version]` or bundle folder"),
                   data: Path = typer.Option(Path("data/starter-speech"), help="speech dataset (its val sentences are spoken)"),
                   limit: int = typer.Option(170, help="at most this many sentences"),
                   threads: int = typer.Option(2), out: Path = typer.Option(None, help="write the JSON here too")):
    """Which spectrum warps suit a recognizer: its greedy WER reading voices it never heard through
    each warp alone and with the warp search (validation sentences; the test split is never used)."""
    from .eval_speech import warp_study

    try:
        result = warp_study(_bundle_dir(asr), data, limit=limit, threads=threads)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if out:
        out.write_text(json.dumps(result, indent=2))
    console.print_json(data=result)


@app.command("diffusion")
def eval_diffusion_cmd(model: Path = typer.Option(Path("training/omniforge_training/starter/diffusion"),
                                                  help="a `train diffusion` run or the starter folder"),
                       clip: Path = typer.Option(Path("training/omniforge_training/starter/clip"),
                                                 help="the CLIP (run or starter folder) that conditions and ranks"),
                       data: Path = typer.Option(Path("data/starter-images"), help="image-text dataset folder"),
                       out: Path = typer.Option(Path("runs/eval-diffusion"), help="folder for quality.json and samples.png"),
                       concepts: int = typer.Option(200, help="training concepts prompted in the held-out phrasing"),
                       steps: int = typer.Option(25, help="DDIM steps"), guidance: float = typer.Option(3.0),
                       seed: int = typer.Option(1337, help="picks the concepts (the recipe's own evaluation uses 1337)"),
                       threads: int = typer.Option(2)):
    """Text-to-image quality of a trained U-Net: top-5 concept hit (beside the same for real images),
    CLIP score against shuffled prompts, Frechet distance on our CLIP's features, and a sample grid."""
    from omniforge_training.data.ingest import DataError
    from omniforge_training.eval_diffusion import evaluate_diffusion

    try:
        result = evaluate_diffusion(model, clip, data, out, n_concepts=concepts, steps=steps, guidance=guidance,
                                    seed=seed, threads=threads, log=lambda m: console.print(m, highlight=False))
    except (FileNotFoundError, ValueError, DataError) as e:
        fail(str(e))
    console.print_json(data=result)


@app.command("speech")
def eval_speech_cmd(asr: str = typer.Option("asr-starter", help="a recognizer: registered `name[:version]` or bundle folder"),
                    tts: str = typer.Option("", help="a voice to judge by the recognizer (registered or folder)"),
                    voices: str = typer.Option("", help="with --tts: comma-separated voices to judge (default: all)"),
                    data: Path = typer.Option(Path("data/starter-speech"), help="speech dataset (its test split)"),
                    limit: int = typer.Option(0, help="at most this many test utterances (0 = all)"),
                    listen: Path = typer.Option(None, help="write sample WAVs and spectrograms.png of the voice here"),
                    tune: bool = typer.Option(False, help="first pick the LM weight and word score on the val split"),
                    save_to: Path = typer.Option(None, help="with --tune: the recognizer's run (or starter) folder "
                                                             "whose config.json gets the tuned settings"),
                    recognizer: bool = typer.Option(True, "--recognizer/--no-recognizer",
                                                    help="measure the recognizer itself (WER per voice)"),
                    warps: str = typer.Option("", help="comma-separated spectrum warps to read the audio with "
                                                        "(default: the recognizer's own; 1.0 = the plain reading)"),
                    breakdown: Path = typer.Option(None, help="with --tts: the voice's acoustic model (a `train tts` "
                                                                "run or the starter's acoustic folder); also measure "
                                                                "copy synthesis and teacher-forced speech"),
                    sentences: str = typer.Option("own", help="with --tts: judge each voice on its teacher's own test "
                                                              "recordings (own) or on every held-out sentence, the "
                                                              "teacher speaking those it never recorded (all)"),
                    baseline: str = typer.Option("", help="with --tts: another voice (registered or folder) judged "
                                                          "in the same run on the same sentences"),
                    threads: int = typer.Option(2), out: Path = typer.Option(None, help="write the JSON here too")):
    """WER/CER of the recognizer per voice (greedy and with the LM); with --tts, the voice's
    intelligibility (the recognizer's WER on it) beside the teacher's own recordings."""
    from .eval_speech import asr_quality, listen as write_samples, tts_intelligibility_per_voice, tune_lm, voice_engine

    if sentences not in ("own", "all"):
        fail(f"--sentences takes own (each teacher's own test recordings) or all (every held-out sentence), "
             f"not {sentences!r}")
    try:
        warp_list = [float(w) for w in warps.split(",") if w.strip()] or None
    except ValueError:
        fail(f"--warps takes comma-separated numbers such as 0.82,0.94,1.0, not {warps!r}")
    try:
        result = {}
        if tune:
            result["tuning"] = tune_lm(_bundle_dir(asr), data, threads=threads)
            if save_to:
                _save_decoding(save_to, result["tuning"]["best"])
        if recognizer:
            result["asr"] = asr_quality(_bundle_dir(asr), data, threads=threads, limit=limit or None,
                                        warps=warp_list)
        if tts:
            chosen = [v.strip() for v in voices.split(",") if v.strip()] or None
            engine = voice_engine(_bundle_dir(tts), threads)           # opened once, for the scores and the samples
            result["tts"] = tts_intelligibility_per_voice(_bundle_dir(tts), _bundle_dir(asr), data, voices=chosen,
                                                          threads=threads, limit=limit or None, tts=engine,
                                                          breakdown=breakdown, sentences=sentences,
                                                          baseline=_bundle_dir(baseline) if baseline else None,
                                                          baseline_label=baseline)
            if listen:
                write_samples(_bundle_dir(tts), data, listen, tts=engine)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    if out:
        out.write_text(json.dumps(result, indent=2))
    console.print_json(data=result)

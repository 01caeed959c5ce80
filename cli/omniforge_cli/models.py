"""`omniforge models ...` and `omniforge bootstrap`: registered models."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from omniforge_shared.settings import omniforge_home

from .context import console, fail, open_registry

app = typer.Typer(help="Registered models.", no_args_is_help=True)


@app.command("list")
def models_list():
    """Every registered model version and its stage."""
    table = Table("name", "version", "task", "stage", "val_loss", "created")
    for v in open_registry().list_versions():
        table.add_row(v.name, v.version, v.task, v.stage, str(v.metrics.get("val_loss", "")),
                      v.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)


@app.command("describe")
def models_describe(name: str, version: Optional[str] = typer.Option(None, help="default: production")):
    """Manifest summary, layer table and parameter counts of a model."""
    from omniforge_shared.inspect import layer_table

    try:
        bundle = open_registry().bundle(name, version)
    except Exception as e:  # RegistryError, BundleError: both say what is wrong
        fail(str(e))
    m = bundle.manifest
    console.print(f"[bold]{m['name']}:{m['version']}[/bold]  task {m['task']}  created {m['created_at']}")
    console.print(f"architecture: {m['architecture']['family']} {json.dumps(m['architecture']['config'])}")
    console.print(f"metrics: {json.dumps(m.get('metrics', {}))}")
    rows, total = layer_table(bundle)
    table = Table("layer", "tensors", "shape(s)", "parameters", title="layers")
    for row in rows:
        table.add_row(row["layer"], str(row["tensors"]), row["shapes"], f"{row['params']:,}")
    table.add_row("[bold]total[/bold]", "", "", f"[bold]{total:,}[/bold]")
    console.print(table)


@app.command("register")
def models_register(bundle_dir: Path = typer.Argument(..., help="an exported bundle folder (manifest.json and its files)"),
                    stage: str = typer.Option("staging", help="staging | production")):
    """Register an exported bundle (its files are checked against the manifest and copied into the store)."""
    try:
        info = open_registry().register_bundle(bundle_dir, stage=stage)
    except Exception as e:
        fail(f"{bundle_dir}: {e}")
    console.print(f"registered {info.name}:{info.version} ({info.stage})")


@app.command("promote")
def models_promote(name: str, version: str,
                   stage: str = typer.Option("production", help="staging | production | archived")):
    """Move a model version to a stage (production archives the previous production version)."""
    try:
        info = open_registry().set_stage(name, version, stage)
    except Exception as e:
        fail(str(e))
    console.print(f"{info.name}:{info.version} is now {info.stage}")


def bootstrap(force: bool = typer.Option(False, help="re-export even if already registered"),
              vision: bool = typer.Option(True, "--vision/--no-vision", help="also the vision starters and the "
                                          "starter search collection"),
              audio: bool = typer.Option(True, "--audio/--no-audio", help="also the speech starters (recognizer, voice, audio tower)")):
    """Export and register the committed starter models, put them in production, and index the
    starter image set for search."""
    _bootstrap_text(force)
    if vision:
        _bootstrap_vision(force)
    if audio:
        _bootstrap_audio(force)


def _bootstrap_audio(force: bool) -> None:
    """The recognizer (its word LM built here from the starter text corpus) and the voice."""
    from omniforge_training.export_asr import export_asr_bundle
    from omniforge_training.export_tts import export_tts_bundle
    from omniforge_training.starter.speech import (STARTER_ASR_DIR, STARTER_ASR_NAME, STARTER_TTS_DIR, STARTER_TTS_NAME,
                                                   listed_heldout)

    registry = open_registry()
    if (STARTER_ASR_DIR / "manifest.json").exists():
        version = json.loads((STARTER_ASR_DIR / "manifest.json").read_text())["version"]
        heldout = listed_heldout(STARTER_ASR_DIR)
        _register_starter(registry, STARTER_ASR_NAME, version, force, lambda out: export_asr_bundle(
            STARTER_ASR_DIR, out, name=STARTER_ASR_NAME, version=version, heldout=heldout, log=console.print))
    else:
        console.print("no committed speech-recognition starter: skipping it")
    if (STARTER_TTS_DIR / "manifest.json").exists():
        m = json.loads((STARTER_TTS_DIR / "manifest.json").read_text())
        _register_starter(registry, STARTER_TTS_NAME, m["version"], force, lambda out: export_tts_bundle(
            STARTER_TTS_DIR / "acoustic", STARTER_TTS_DIR / "vocoder", out, name=STARTER_TTS_NAME, version=m["version"],
            voices=m["voices"], log=console.print))
    else:
        console.print("no committed text-to-speech starter: skipping it")
    _bootstrap_audio_tower(registry, force)


def _bootstrap_audio_tower(registry, force: bool) -> None:
    """The audio tower, in the starter CLIP's space: registered only when that space is."""
    from omniforge_training.export_audio_tower import export_audio_tower_bundle
    from omniforge_training.starter.speech import STARTER_AUDIO_TOWER_DIR, STARTER_AUDIO_TOWER_NAME

    if not (STARTER_AUDIO_TOWER_DIR / "manifest.json").exists():
        console.print("no committed audio tower starter: skipping it")
        return
    m = json.loads((STARTER_AUDIO_TOWER_DIR / "manifest.json").read_text())
    space = (m["space"]["name"], str(m["space"]["version"]))
    # a registered model in that space: the model itself, or a later one that kept its text side
    if not any(registry.bundle(space[0], v.version).space == space for v in registry.list_versions(space[0])):
        console.print(f"the audio tower joins the space of {space[0]}:{space[1]}, which no registered model "
                      "serves: skipping it")
        return
    _register_starter(registry, STARTER_AUDIO_TOWER_NAME, m["version"], force, lambda out: export_audio_tower_bundle(
        STARTER_AUDIO_TOWER_DIR, out, name=STARTER_AUDIO_TOWER_NAME, version=m["version"], log=console.print))


def _bootstrap_text(force: bool) -> None:
    from omniforge_training.export_onnx import export_bundle
    from omniforge_training.starter import STARTER_TEXT_DIR, STARTER_TEXT_NAME

    registry = open_registry()
    version = json.loads((STARTER_TEXT_DIR / "manifest.json").read_text())["version"]
    registered = any(v.version == version for v in registry.list_versions(STARTER_TEXT_NAME))
    if registered and not force and _outdated_graph(registry, STARTER_TEXT_NAME, version):
        console.print(f"{STARTER_TEXT_NAME}:{version} was exported with an older graph format: exporting it again")
        force = True
    _register_starter(registry, STARTER_TEXT_NAME, version, force, lambda out: export_bundle(
        STARTER_TEXT_DIR, out, name=STARTER_TEXT_NAME, version=version, int8=True, log=console.print))


def _bootstrap_vision(force: bool) -> None:
    from omniforge_shared.registry_settings import RegistrySettings
    from omniforge_shared.settings import load_settings
    from omniforge_training.data.image_text import load_image_text
    from omniforge_training.data.ingest import DataError
    from omniforge_training.data.starter_images import build_starter_images
    from omniforge_training.export_clip import export_clip_bundle
    from omniforge_training.starter.vision import STARTER_CLIP_DIR, STARTER_CLIP_NAME

    if not (STARTER_CLIP_DIR / "manifest.json").exists():
        console.print("no committed CLIP starter: skipping the vision starters")
        return
    registry = open_registry()
    # 1. the starter image set, built once under the data root
    data_dir = load_settings(RegistrySettings).data_root / "starter-images"
    if not (data_dir / "dataset.json").exists():
        try:
            build_starter_images(data_dir, log=console.print)
        except DataError as e:
            fail(f"{e}\n(the starter image set is needed to index the starter collection)")
        registry.register_dataset(data_dir, name="starter-images")
    ds = load_image_text(data_dir)
    # 2. the CLIP bundle
    version = json.loads((STARTER_CLIP_DIR / "manifest.json").read_text())["version"]
    _register_starter(registry, STARTER_CLIP_NAME, version, force, lambda out: export_clip_bundle(
        STARTER_CLIP_DIR, out, name=STARTER_CLIP_NAME, version=version, sample_images=ds.images[:8], log=console.print))
    # 3. the starter collection, indexed with that model
    index_starter(registry.bundle(STARTER_CLIP_NAME, version), ds, force=force)
    # 4. the captioner, on that CLIP's image tower; 5. text-to-image, on its text tower
    _bootstrap_captioner(registry, ds, force)
    _bootstrap_diffusion(registry, force)


def _bootstrap_captioner(registry, ds, force: bool) -> None:
    from omniforge_training.export_caption import export_caption_bundle
    from omniforge_training.starter.vision import STARTER_CAPTION_DIR, STARTER_CAPTION_NAME, STARTER_CLIP_DIR

    if not (STARTER_CAPTION_DIR / "manifest.json").exists():
        console.print("no committed captioner starter: skipping it")
        return
    version = json.loads((STARTER_CAPTION_DIR / "manifest.json").read_text())["version"]
    _register_starter(registry, STARTER_CAPTION_NAME, version, force, lambda out: export_caption_bundle(
        STARTER_CAPTION_DIR, STARTER_CLIP_DIR, out, name=STARTER_CAPTION_NAME, version=version,
        sample_images=ds.images[:4], log=console.print))


def _bootstrap_diffusion(registry, force: bool) -> None:
    from omniforge_training.export_diffusion import export_diffusion_bundle
    from omniforge_training.starter.vision import STARTER_CLIP_DIR, STARTER_DIFFUSION_DIR, STARTER_DIFFUSION_NAME

    if not (STARTER_DIFFUSION_DIR / "manifest.json").exists():
        console.print("no committed text-to-image starter: skipping it")
        return
    version = json.loads((STARTER_DIFFUSION_DIR / "manifest.json").read_text())["version"]
    _register_starter(registry, STARTER_DIFFUSION_NAME, version, force, lambda out: export_diffusion_bundle(
        STARTER_DIFFUSION_DIR, STARTER_CLIP_DIR, out, name=STARTER_DIFFUSION_NAME, version=version,
        log=console.print))


def _register_starter(registry, name: str, version: str, force: bool, export) -> None:
    """Registers a committed starter in production: exported once (`export(out_dir) -> Bundle`),
    promoted if it was registered before, exported again with `force`."""
    existing = [v for v in registry.list_versions(name) if v.version == version]
    if existing and not force:
        if existing[0].stage != "production":
            registry.set_stage(name, version, "production")
        console.print(f"{name}:{version} already registered ({existing[0].stage} -> production)")
        return
    bundle = export(omniforge_home() / "build" / f"{name}-{version}")
    if existing:                        # only now: a failed export keeps the registered version
        registry.delete_version(name, version)
    info = registry.register_bundle(bundle.path, stage="production")
    console.print(f"[green]registered[/green] {info.name}:{info.version} ({info.stage})")


def index_starter(bundle, ds, *, force: bool = False) -> None:
    """(Re-)indexes every starter image into the `starter` collection of the fusion service's index."""
    from omniforge_fusion.engine import EmbeddingEngine
    from omniforge_fusion.index import STARTER_COLLECTION
    from omniforge_fusion.server import open_index
    from omniforge_fusion.settings import FusionServiceSettings
    from omniforge_shared.settings import load_settings
    from omniforge_training.starter.vision import starter_index_items

    index = open_index(load_settings(FusionServiceSettings))
    have = {name: (count, model, version) for name, count, model, version in index.collections()}
    want = (len(ds.item_concept), bundle.name, bundle.version)
    if have.get(STARTER_COLLECTION) == want and not force:
        console.print(f"collection {STARTER_COLLECTION!r}: {want[0]} items of {bundle.name}:{bundle.version}, up to date")
        return
    if STARTER_COLLECTION in have:
        index.drop(STARTER_COLLECTION)
    engine = EmbeddingEngine(bundle)
    ids, captions, metas = starter_index_items(ds)
    vectors = engine.embed_pixels(list(ds.images))
    count = index.add(STARTER_COLLECTION, ids=ids, embeddings=vectors, captions=captions, metadatas=metas,
                      model=(bundle.name, bundle.version))
    console.print(f"[green]indexed[/green] {count} starter images into {STARTER_COLLECTION!r} ({index.where})")


def _outdated_graph(registry, name: str, version: str) -> bool:
    from omniforge_shared.backends.base import GRAPH_FORMAT

    return registry.bundle(name, version).manifest.get("graph", {}).get("format") != GRAPH_FORMAT


def register(root: typer.Typer) -> None:
    root.command()(bootstrap)

"""Trains the audio tower: speech into the shared latent space of an image-text model.

    1. the targets: every distinct sentence of the speech datasets through the frozen text tower
       of the embedding bundle (`space`), with the same ONNX graph and tokenizer the fusion
       service uses, so a spoken query lands where its typed words would
    2. the recognizer's conformer encoder (`asr`) runs once over every utterance up to its top
       `tune_layers` blocks; those outputs are cached (fp16), so a step runs only the blocks that
       learn, the tower's own head, pooling and projection
    3. each step: a batch of training utterances of similar length (at most `batch_seconds` of
       padded audio, buckets visited in a seeded order); loss = cross-entropy of the audio
       vector against every training sentence's text vector (one learned temperature) +
       `distill_weight` x (1 - cosine to its own sentence's vector)
    4. every `eval_interval` steps: audio -> text retrieval on the validation split
    5. at the end, on the test split: retrieval R@1/R@5 per voice group, beside the cascade (our
       recognizer's greedy transcript through the same text tower) in the same run; with an
       image-text dataset, spoken queries for held-out concepts ranked against their images,
       beside the typed captions
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from omniforge_shared.audio import MelConfig

from .checkpoint import atomic_write, load_weights, save_weights
from .data.audio_features import LogMel
from .data.speech import load_speech
from .loop import train_loop
from .models.audio_tower import AudioTower, AudioTowerConfig
from .models.conformer import ASRConfig, ConformerCTC
from .schedule import bucket_at, length_buckets, warmup_cosine
from .train_asr import AudioBank, error_rates, featurise, load_bank, transcribe_bank, transcript_of


@dataclass
class AudioAlignConfig:
    data: list[str] = field(default_factory=list)   # speech dataset folders (their splits are kept)
    space: str = ""                    # the embedding bundle folder whose text tower is the target
    asr: str = ""                      # the recognizer (config.json + model.safetensors) to start from
    images: str = ""                   # an image-text dataset for the spoken image search test (optional)
    out: str = "runs/audio-align"
    head_layers: int = 1
    tune_layers: int = 2               # the encoder's top blocks that keep learning
    max_steps: int = 800
    batch_seconds: float = 200.0       # padded audio per batch; batches hold utterances of similar length
    lr: float = 1e-3
    min_lr: float = 2e-5
    warmup_steps: int = 100
    weight_decay: float = 0.01
    distill_weight: float = 1.0
    max_utterance_seconds: float = 16.0
    eval_interval: int = 200
    checkpoint_interval: int = 200
    seed: int = 1337
    threads: int = 2
    resume: bool = True


def sentence_key(item: dict) -> str:
    return " ".join(item["text"].split())


def text_vectors(space: Path, texts: list[str]) -> np.ndarray:
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.encoders import TextEmbedder

    return TextEmbedder(load_bundle(space), threads=1)(texts).astype(np.float32) if texts else np.zeros((0, 1), np.float32)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


@dataclass
class Encoded:
    """The frozen part of the encoder's output per utterance: (frames, d) fp16, one array with offsets."""
    x: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.x[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        t = max(len(r) for r in rows)
        out = np.zeros((len(rows), t, self.x.shape[1]), np.float32)
        keep = np.zeros((len(rows), t), np.float32)
        for k, r in enumerate(rows):
            out[k, :len(r)], keep[k, :len(r)] = r, 1.0
        return torch.from_numpy(out), torch.from_numpy(keep)


@torch.no_grad()
def encode_bank(tower: AudioTower, bank: AudioBank, mel: LogMel, upto: int, cache: Path, key: str, *,
                batch_seconds: float = 120.0, log=print, progress: bool = True) -> Encoded:
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        if str(z["key"]) == key:
            return Encoded(z["x"], z["offsets"])
    t0 = time.time()
    tower.eval()
    n = len(bank.items)
    order = sorted(range(n), key=bank.seconds)
    rows: dict[int, np.ndarray] = {}
    groups, cur = [], []
    for i in order:
        if cur and bank.seconds(i) * (len(cur) + 1) > batch_seconds:
            groups.append(cur)
            cur = []
        cur.append(i)
    if cur:
        groups.append(cur)
    it = groups
    if progress:
        from tqdm import tqdm
        it = tqdm(groups, desc=f"encode {cache.stem}", unit="batch")
    for g in it:
        feats, lengths = featurise([bank.wave(i) for i in g], mel)
        x, keep, olens = tower.encode(feats, lengths, upto=upto)
        for k, i in enumerate(g):
            rows[i] = x[k, :int(olens[k])].numpy().astype(np.float16)
    offsets = np.concatenate([[0], np.cumsum([len(rows[i]) for i in range(n)])]).astype(np.int64)
    x = np.concatenate([rows[i] for i in range(n)]) if n else np.zeros((0, tower.config.asr.d_model), np.float16)
    atomic_write(cache, lambda tmp: np.savez(open(tmp, "wb"), x=x, offsets=offsets, key=np.array(key)))
    log(f"{n} utterances encoded in {time.time() - t0:.0f} s")
    return Encoded(x, offsets)


class _Aligner(nn.Module):
    """The tower and the temperature of its loss (the temperature is not exported)."""

    def __init__(self, tower: AudioTower) -> None:
        super().__init__()
        self.tower = tower
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


@torch.no_grad()
def embed_encoded(tower: AudioTower, enc: Encoded, start: int, batch: int = 128) -> np.ndarray:
    tower.eval()
    order = sorted(range(len(enc)), key=lambda i: enc.offsets[i + 1] - enc.offsets[i])
    out = np.zeros((len(enc), tower.config.embed_dim), np.float32)
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        x, keep = enc.batch(idx)
        out[idx] = tower.embed_encoded(x, keep, start=start).numpy()
    return out


def retrieval(queries: np.ndarray, truth: np.ndarray, candidates: np.ndarray) -> dict:
    """Each query's rank of its true candidate (cosine) -> R@1, R@5, median rank."""
    if not len(queries):
        return {}
    sims = queries @ candidates.T
    own = sims[np.arange(len(queries)), truth]
    ranks = (sims > own[:, None]).sum(1) + 1
    return {"r1": round(float((ranks <= 1).mean()), 4), "r5": round(float((ranks <= 5).mean()), 4),
            "median_rank": float(np.median(ranks)), "queries": int(len(queries)), "candidates": int(len(candidates))}


def sentence_retrieval(queries: np.ndarray, items: list[dict], vectors: np.ndarray, index: dict) -> dict:
    """Each query (the vector of items[k]) ranked against the text vectors of the sentences those
    items say -> R@1, R@5, median rank and the mean cosine to its own sentence."""
    if not items:
        return {}
    cand = sorted({index[sentence_key(it)] for it in items})
    pos = {c: j for j, c in enumerate(cand)}
    truth = np.array([pos[index[sentence_key(it)]] for it in items])
    r = retrieval(queries, truth, vectors[cand])
    r["mean_cosine"] = round(float((queries * vectors[[cand[t] for t in truth]]).sum(1).mean()), 4)
    return r


def lr_at(step: int, cfg: AudioAlignConfig) -> float:
    return warmup_cosine(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)


def train_audio_align(cfg: AudioAlignConfig, *, on_step: Callable | None = None, log=print,
                      progress: bool = True) -> dict:
    from omniforge_shared.bundle import load_bundle

    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.data:
        raise ValueError("no speech dataset given; send one or more speech dataset folders")
    space = load_bundle(Path(cfg.space))
    if space.task != "embedding":
        raise ValueError(f"{cfg.space} is a {space.task!r} bundle; the audio tower aligns to an embedding model")
    asr_dir = Path(cfg.asr)
    if not (asr_dir / "config.json").is_file() or not (asr_dir / "model.safetensors").is_file():
        raise ValueError(f"{cfg.asr} holds no recognizer weights (config.json + model.safetensors); train one with "
                         "`omniforge train asr` or use the starter")
    acfg = ASRConfig.from_dict(json.loads((asr_dir / "config.json").read_text())["model"])
    dims = int(space.manifest["embedding"]["dimensions"])
    tcfg = AudioTowerConfig(asr=acfg, embed_dim=dims, head_layers=cfg.head_layers)
    if not 0 <= cfg.tune_layers <= acfg.n_layers:
        raise ValueError(f"tune_layers={cfg.tune_layers}; the recognizer has {acfg.n_layers} blocks")
    upto = acfg.n_layers - cfg.tune_layers

    # ---- utterances, by split, from every dataset --------------------------------------------
    ok = lambda it: 0 < it["seconds"] <= cfg.max_utterance_seconds and it.get("text", "").strip()  # noqa: E731
    splits: dict[str, list[dict]] = {"train": [], "val": [], "test": []}
    banks: dict[str, list[AudioBank]] = {s: [] for s in splits}
    heldout: set[str] = set()
    hashes = []
    for d in cfg.data:
        ds = load_speech(Path(d))
        heldout |= set(ds.manifest.get("split", {}).get("heldout_speakers", []))
        hashes.append(ds.manifest["content_hash"])
        for s in splits:
            items = [{**it, "dataset": ds.manifest.get("name", Path(d).name)} for it in ds.split(s) if ok(it)]
            if s == "val":
                items = [it for it in items if it["speaker"] not in heldout]
            if items:
                splits[s].extend(items)
                banks[s].append(load_bank(ds, items, out / "cache" / f"{Path(d).name}-{s}.npz", log=log,
                                          progress=progress))
    if len(splits["train"]) < 8:
        raise ValueError(f"only {len(splits['train'])} training utterances in {cfg.data}; the tower needs more")
    texts = sorted({sentence_key(it) for s in splits.values() for it in s})
    t0 = time.time()
    vectors = text_vectors(space.path, texts)
    index = {t: i for i, t in enumerate(texts)}
    log(f"{len(texts)} sentences through the text tower of {space.name}:{space.version} in {time.time() - t0:.0f} s")

    torch.manual_seed(cfg.seed)
    tower = AudioTower(tcfg)
    tower.load_recognizer({k: v.float() for k, v in load_file(str(asr_dir / "model.safetensors")).items()})
    mel = LogMel(MelConfig(sample_rate=acfg.sample_rate, n_fft=acfg.n_fft, hop=acfg.hop, n_mels=acfg.n_mels))
    key_base = f"{_file_hash(asr_dir / 'model.safetensors')}:{upto}"
    encoded: dict[str, Encoded] = {}
    for s in splits:
        parts = [encode_bank(tower, b, mel, upto, out / "cache" / f"encoded-{s}-{k}.npz",
                             f"{key_base}:{len(b.items)}:{b.items[0]['id']}", log=log, progress=progress)
                 for k, b in enumerate(banks[s])]
        if parts:
            lens = [p.offsets[1:] - p.offsets[:-1] for p in parts]
            all_lens = np.concatenate(lens)
            encoded[s] = Encoded(np.concatenate([p.x for p in parts]),
                                 np.concatenate([[0], np.cumsum(all_lens)]).astype(np.int64))
    train = encoded["train"]
    train_truth = torch.tensor([index[sentence_key(it)] for it in splits["train"]])
    train_texts = sorted(set(train_truth.tolist()))
    remap = {t: k for k, t in enumerate(train_texts)}
    train_targets = torch.from_numpy(vectors[train_texts])                    # (S_train, D)
    train_class = torch.tensor([remap[t] for t in train_truth.tolist()])

    model = _Aligner(tower)
    params = tower.freeze(cfg.tune_layers) + [model.logit_scale]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))

    frame_s = acfg.hop * 4 / acfg.sample_rate
    batches = length_buckets((train.offsets[1:] - train.offsets[:-1]) * frame_s, cfg.batch_seconds)

    def step_loss(step: int):
        idx = bucket_at(batches, step=step, seed=cfg.seed)
        x, keep = train.batch(idx)
        a = tower.embed_encoded(x, keep, start=upto)
        cls = train_class[idx]
        logits = model.scale() * a @ train_targets.T
        own = train_targets[cls]
        loss = F.cross_entropy(logits, cls) + cfg.distill_weight * (1 - (a * own).sum(-1)).mean()
        return loss, len(idx)

    def split_retrieval(s: str, keep=lambda it: True) -> dict:
        if s not in encoded:
            return {}
        sel = [k for k, it in enumerate(splits[s]) if keep(it)]
        emb = embed_encoded(tower, encoded[s], upto)[sel]
        return sentence_retrieval(emb, [splits[s][k] for k in sel], vectors, index)

    def evaluate(step: int) -> dict:
        r = split_retrieval("val")
        return {f"val_{k}": float(v) for k, v in r.items() if k in ("r1", "r5", "mean_cosine")}

    result = train_loop(cfg=cfg, model=model, opt=opt, out=out, total=cfg.max_steps, lr_at=lambda s: lr_at(s, cfg),
                        step_loss=step_loss, evaluate=evaluate, eval_interval=cfg.eval_interval,
                        checkpoint_interval=cfg.checkpoint_interval, clip_norm=5.0, desc="audio-align",
                        on_step=on_step, log=log, progress=progress)
    save_weights(out / "model.safetensors", tower)
    melcfg = mel.cfg
    (out / "config.json").write_text(json.dumps({
        "model": tcfg.to_dict(), "mel": melcfg.to_dict(), "space": dict(zip(("name", "version"), space.space)),
        "train": asdict(cfg)}, indent=2))
    quality = {}
    if "test" in encoded:
        quality = evaluate_test(tower, upto, splits["test"], banks["test"], encoded["test"], vectors, index, heldout,
                                space.path, asr_dir, mel, images=Path(cfg.images) if cfg.images else None, log=log)
    summary = {"recipe": "audio-align", "steps": result.step, "max_steps": cfg.max_steps, "wall_s": round(result.wall_s, 1),
               "params": sum(p.numel() for p in tower.parameters()),
               "trained_params": sum(p.numel() for p in params), "final_loss": result.loss_ema,
               "temperature": round(1.0 / float(model.scale()), 4), "quality": quality, "history": result.history,
               "datasets": [Path(d).name for d in cfg.data], "dataset_hashes": hashes,
               "sentences": len(texts), "train_utterances": len(splits["train"]),
               "space": dict(zip(("name", "version"), space.space)), "config": asdict(cfg)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def evaluate_test(tower: AudioTower, upto: int, items: list[dict], banks: list[AudioBank], enc: Encoded,
                  vectors: np.ndarray, index: dict, heldout: set[str], space: Path, asr_dir: Path, mel: LogMel, *,
                  images: Path | None = None, log=print) -> dict:
    """Test-split retrieval, the tower beside the cascade (our recognizer + the text tower)."""
    emb = embed_encoded(tower, enc, upto)
    # the cascade: the recognizer's greedy transcript of each utterance through the same text tower
    asr = ConformerCTC(ASRConfig.from_dict(json.loads((asr_dir / "config.json").read_text())["model"]))
    load_weights(asr_dir / "model.safetensors", asr)
    hyps = [h for b in banks for h in transcribe_bank(asr, b, list(range(len(b.items))), mel)]
    cascade = text_vectors(space, [h or "silence" for h in hyps])
    asr_rates = error_rates([transcript_of(it) for it in items], hyps)

    def group(keep) -> dict:
        sel = [k for k, it in enumerate(items) if keep(it)]
        if not sel:
            return {}
        said = [items[k] for k in sel]
        tower_r = sentence_retrieval(emb[sel], said, vectors, index)
        casc = sentence_retrieval(cascade[sel], said, vectors, index)
        return {"tower": tower_r, "cascade": casc,
                "r1_ratio_tower_to_cascade": round(tower_r["r1"] / casc["r1"], 3) if casc["r1"] else None}

    out = {"all": group(lambda it: True),
           "heldout_voice": group(lambda it: it["speaker"] in heldout),
           "training_voices": group(lambda it: it["speaker"] not in heldout),
           "cascade_recognizer_greedy": asr_rates}
    for name in sorted({it["dataset"] for it in items}):
        out[f"dataset_{name}"] = group(lambda it, name=name: it["dataset"] == name)
    if images is not None and any("concept" in it for it in items):
        out["spoken_image_search"] = spoken_image_search(items, emb, space, images)
    log("test: " + json.dumps({k: v for k, v in out.items() if k in ("all", "heldout_voice")}))
    return out


def spoken_image_search(items: list[dict], emb: np.ndarray, space: Path, images: Path) -> dict:
    """Spoken captions of held-out concepts ranked against those concepts' images (each concept's
    vector: the mean of its images'), beside the same captions typed."""
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.encoders import ImageEmbedder

    from .data.image_text import load_image_text

    ds = load_image_text(images)
    ids = [c["id"] for c in ds.concepts]
    sel = [k for k, it in enumerate(items) if it.get("concept") in ids]
    concepts = sorted({items[k]["concept"] for k in sel})
    if not concepts:
        return {}
    cpos = {c: j for j, c in enumerate(concepts)}
    want = {ids.index(c): cpos[c] for c in concepts}
    rows = [i for i in range(len(ds.item_concept)) if int(ds.item_concept[i]) in want]
    img = ImageEmbedder(load_bundle(space), threads=1)([ds.images[i] for i in rows])
    centroid = np.zeros((len(concepts), img.shape[1]), np.float32)
    for r, v in zip(rows, img):
        centroid[want[int(ds.item_concept[r])]] += v
    centroid /= np.linalg.norm(centroid, axis=1, keepdims=True) + 1e-9
    truth = np.array([cpos[items[k]["concept"]] for k in sel])
    typed = text_vectors(space, [items[k]["text"] for k in sel])
    spoken = retrieval(emb[sel], truth, centroid)
    typed_r = retrieval(typed, truth, centroid)
    return {"spoken": spoken, "typed": typed_r, "images": len(rows),
            "r5_ratio_spoken_to_typed": round(spoken["r5"] / typed_r["r5"], 3) if typed_r["r5"] else None}

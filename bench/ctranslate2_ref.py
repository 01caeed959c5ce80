"""A second decode reference beside transformers: CTranslate2's GPT2 generator on CPU.

`python bench/run.py ctranslate2`. A GPT2LMHeadModel of the starter's dims (random weights, as
in the transformers reference of `decode`) is saved with the starter's tokenizer and converted
offline to CTranslate2, fp32 and int8. Both sides decode the same prompts greedily to exactly
128 new tokens, at batch 1 and 8; both run at 1 and 2 threads (CTranslate2's intra_threads),
in interleaved rounds, and each side keeps its best. Needs `pip install -r bench/requirements.txt`
(ctranslate2).
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

THREAD_COUNTS = (1, 2)           # threads tried on both sides for every row
BATCHES = (1, 8)


def bench_ctranslate2(new_tokens: int = 128, prompt_tokens: int = 16, repeats: int = 3) -> dict:
    # imported here, not at the top: run.py imports this module to register it
    from run import engine_tokens_per_s, starter_bundle

    try:
        import ctranslate2
    except ImportError:
        msg = "ctranslate2 is not installed: run `.venv/bin/pip install -r bench/requirements.txt`, then retry"
        print(f"ctranslate2: skipped, {msg}", file=sys.stderr)
        return {"skipped": msg}
    import numpy as np

    from omniforge_shared.backends import load_decoder
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_text.engine import TextEngine
    from omniforge_text.sampling import SamplingParams

    bundle = load_bundle(starter_bundle())
    cfg = bundle.manifest["architecture"]["config"]
    tokenizer = load_tokenizer(bundle.file("tokenizer"))
    # the same prompts as `decode`: random byte-level ids decoded to text; both sides get their
    # re-encoded ids
    rng = np.random.default_rng(0)
    prompts = [tokenizer.decode(rng.integers(0, 256, prompt_tokens).tolist()) for _ in range(8)]
    prompt_ids = [tokenizer.encode(p) for p in prompts]

    with tempfile.TemporaryDirectory() as tmp:
        models, vocab = _convert(Path(tmp), bundle.file("tokenizer"), cfg, tokenizer.eos_id)
        start_tokens = [vocab.convert_ids_to_tokens(ids) for ids in prompt_ids]
        # both sides at 1 and 2 threads; each keeps its best (this CPU's speed drifts, so the
        # rounds interleave every configuration rather than measuring one after another)
        engines = {(precision, threads): TextEngine(load_decoder(bundle, threads=threads, int8=precision == "int8"),
                                                    tokenizer, max_batch_size=8)
                   for precision in ("fp32", "int8") for threads in THREAD_COUNTS}
        generators = {(precision, threads): ctranslate2.Generator(str(models[precision]), device="cpu",
                                                                  intra_threads=threads, inter_threads=1)
                      for precision in ("fp32", "int8") for threads in THREAD_COUNTS}
        params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

        def ours(key, batch: int) -> float:
            return asyncio.run(engine_tokens_per_s(engines[key], prompts[:batch], params))

        def theirs(key, batch: int) -> float:
            t = time.perf_counter()
            # greedy (top-k 1), exactly new_tokens after the prompt: min_length keeps the end token away
            results = generators[key].generate_batch(start_tokens[:batch], max_length=new_tokens,
                                                     min_length=new_tokens, sampling_topk=1,
                                                     include_prompt_in_result=False)
            dt = time.perf_counter() - t
            assert all(len(r.sequences_ids[0]) == new_tokens for r in results)
            return batch * new_tokens / dt

        rows = {}
        for batch in BATCHES:
            row = {}
            for precision in ("fp32", "int8"):
                runs = {(side, t): [] for side in ("ours", "ctranslate2") for t in THREAD_COUNTS}
                for t in THREAD_COUNTS:                                  # warm-up
                    ours((precision, t), batch), theirs((precision, t), batch)
                for _ in range(repeats):
                    for t in THREAD_COUNTS:
                        runs[("ours", t)].append(ours((precision, t), batch))
                        runs[("ctranslate2", t)].append(theirs((precision, t), batch))
                best = {side: max(THREAD_COUNTS, key=lambda t: max(runs[(side, t)])) for side in ("ours", "ctranslate2")}
                o, h = (round(max(runs[(side, best[side])]), 1) for side in ("ours", "ctranslate2"))
                row[precision] = {"ours_tokens_per_s": o, "ours_threads": best["ours"],
                                  "ctranslate2_tokens_per_s": h, "ctranslate2_intra_threads": best["ctranslate2"],
                                  "ratio": round(o / h, 2),
                                  "ctranslate2_compute_type": generators[(precision, 1)].compute_type,
                                  "by_threads": {f"{side}_{t}": round(max(v), 1) for (side, t), v in runs.items()}}
                print(f"ctranslate2 batch {batch} {precision}: ours {o:,.0f} tok/s ({best['ours']} threads), "
                      f"CTranslate2 {h:,.0f} tok/s ({best['ctranslate2']} threads), ratio {o / h:.2f}x", file=sys.stderr)
            rows[f"batch_{batch}"] = row
        for engine in engines.values():
            engine.stop()
    return {"model": {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size")},
            "ctranslate2_version": ctranslate2.__version__,
            "thread_counts": list(THREAD_COUNTS), "new_tokens": new_tokens,
            "prompt_lengths": [len(ids) for ids in prompt_ids], **rows}


def _convert(tmp: Path, tokenizer_file: Path, cfg: dict, eos_id: int | None):
    """A random-weight GPT2LMHeadModel of the starter's dims, converted to CTranslate2 fp32 and int8,
    and the tokenizer (the starter's, so token ids and CTranslate2's token strings agree)."""
    import ctranslate2
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    # 1. the transformers model and tokenizer, saved as a local folder (no hub access)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["block_size"],
                                    n_embd=cfg["n_embd"], n_layer=cfg["n_layer"], n_head=cfg["n_head"],
                                    bos_token_id=eos_id, eos_token_id=eos_id)).eval()
    hf.save_pretrained(tmp / "hf")
    eos = "<|endoftext|>"
    vocab = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), bos_token=eos, eos_token=eos, unk_token=eos)
    vocab.save_pretrained(tmp / "hf")
    # 2. converted twice: weights kept in float32, and quantized to int8
    models = {}
    for precision, quantization in (("fp32", None), ("int8", "int8")):
        converter = ctranslate2.converters.TransformersConverter(str(tmp / "hf"))
        models[precision] = Path(converter.convert(str(tmp / f"ct2-{precision}"), quantization=quantization))
    return models, vocab

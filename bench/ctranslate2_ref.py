"""A second decode reference beside transformers: CTranslate2's GPT2 generator on CPU.

`python bench/run.py ctranslate2`. A GPT2LMHeadModel of the starter's dims (random weights, as
in the transformers reference of `decode`) is saved with the starter's tokenizer and converted
offline to CTranslate2, fp32 and int8. Both sides decode the same prompts greedily to exactly
128 new tokens, at batch 1 and 8; CTranslate2 runs at intra_threads 1 and 2 and each row keeps
its best. Needs `pip install -r bench/requirements.txt` (ctranslate2).
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

THREAD_COUNTS = (1, 2)           # CTranslate2's intra_threads tried for every row
BATCHES = (1, 8)


def bench_ctranslate2(new_tokens: int = 128, prompt_tokens: int = 16, repeats: int = 3) -> dict:
    # imported here, not at the top: run.py imports this module to register it
    from run import THREADS, engine_tokens_per_s, starter_bundle

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
        engines = {"fp32": TextEngine(load_decoder(bundle, threads=THREADS), tokenizer, max_batch_size=8),
                   "int8": TextEngine(load_decoder(bundle, threads=THREADS, int8=True), tokenizer, max_batch_size=8)}
        params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

        def ours(precision: str, batch: int) -> float:
            return asyncio.run(engine_tokens_per_s(engines[precision], prompts[:batch], params))

        def theirs(generator, batch: int) -> float:
            t = time.perf_counter()
            # greedy (top-k 1), exactly new_tokens after the prompt: min_length keeps the end token away
            results = generator.generate_batch(start_tokens[:batch], max_length=new_tokens, min_length=new_tokens,
                                               sampling_topk=1, include_prompt_in_result=False)
            dt = time.perf_counter() - t
            assert all(len(r.sequences_ids[0]) == new_tokens for r in results)
            return batch * new_tokens / dt

        rows = {}
        for batch in BATCHES:
            row = {}
            for precision in ("fp32", "int8"):
                ours(precision, batch)                                   # warm-up
                o = max(ours(precision, batch) for _ in range(repeats))
                # CTranslate2 at each thread count; the row keeps the best
                by_threads, compute_type = {}, None
                for threads in THREAD_COUNTS:
                    generator = ctranslate2.Generator(str(models[precision]), device="cpu", intra_threads=threads,
                                                      inter_threads=1)
                    compute_type = generator.compute_type
                    theirs(generator, batch)                             # warm-up
                    by_threads[threads] = round(max(theirs(generator, batch) for _ in range(repeats)), 1)
                    del generator
                best_threads = max(by_threads, key=by_threads.get)
                h = by_threads[best_threads]
                row[precision] = {"ours_tokens_per_s": round(o, 1), "ctranslate2_tokens_per_s": h,
                                  "ctranslate2_intra_threads": best_threads, "ratio": round(o / h, 2),
                                  "ctranslate2_compute_type": compute_type,
                                  "ctranslate2_by_intra_threads": by_threads}
                print(f"ctranslate2 batch {batch} {precision}: ours {o:,.0f} tok/s, CTranslate2 {h:,.0f} tok/s "
                      f"(intra_threads {best_threads}), ratio {o / h:.2f}x", file=sys.stderr)
            rows[f"batch_{batch}"] = row
        for engine in engines.values():
            engine.stop()
    return {"model": {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size")},
            "ctranslate2_version": ctranslate2.__version__,
            "ours_threads": THREADS, "new_tokens": new_tokens,
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

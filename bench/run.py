"""omniforge benchmarks, side by side in one run (`make bench`; `python bench/run.py decode` for one).

  decode   tokens/s of our text service engine (ONNX + KV cache) vs transformers GPT2 generate()
  train    tokens/s of our trainer vs a plain training loop over transformers GPT2LMHeadModel
  quality  val loss of `omniforge train text` on tinyshakespeare with the reference recipe
  gateway  added latency of HTTP gateway + gRPC vs the engine in-process, next to a bare FastAPI echo
  served   tokens/s delivered through gateway + text service under wrk load vs the engine alone (served.py)
  ctranslate2  tokens/s of our engine vs CTranslate2's GPT2 generator, fp32 and int8 (ctranslate2_ref.py)
  vision   image-encoder images/s, ONNX vs torch eager; caption latency; text-to-image s/image (vision.py)
  audio    TTS real-time factor vs the Piper voice, time to first streamed chunk, ASR real-time factor,
           all on one thread (audio.py)

Results are written as JSON under bench/results/.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ctranslate2_ref import bench_ctranslate2   # these two import helpers from here inside their functions
from served import bench_served
from vision import bench_vision
from audio import bench_audio

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TINYSHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# a gateway in front of the text service alone: the other services are not configured, so /readyz
# waits for text only
TEXT_ONLY = {**{f"OMNIFORGE_GATEWAY_{label}_ADDRESS": "" for label in ("IMAGE", "AUDIO", "FUSION")},
             "OMNIFORGE_GATEWAY_AUTH": "off"}


def save(name: str, result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, "threads": THREADS, "machine": platform.machine(),
              "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **result}
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def starter_bundle() -> Path:
    """The starter text model exported to an ONNX bundle (exported once into a temp folder)."""
    from omniforge_training.export_onnx import export_bundle
    from omniforge_training.starter import STARTER_TEXT_DIR

    out = Path(tempfile.gettempdir()) / "omniforge-bench-starter"
    if not (out / "model.int8.onnx").exists():
        export_bundle(STARTER_TEXT_DIR, out, name="text-starter", version="bench", int8=True, log=lambda m: None)
    return out


# ---- decode ------------------------------------------------------------------------------------

async def engine_tokens_per_s(engine, prompts: list[str], params) -> float:
    """tokens/s of one batch: every prompt generated at once, each to exactly params.max_tokens."""
    async def one(p):
        n = 0
        async for piece in engine.generate(p, params, stream=False):   # one piece at the end, as generate() returns
            n = piece.completion_tokens
        return n
    t = time.perf_counter()
    counts = await asyncio.gather(*[one(p) for p in prompts])
    assert all(c == params.max_tokens for c in counts), counts
    return sum(counts) / (time.perf_counter() - t)


def bench_decode(new_tokens: int = 128, prompt_tokens: int = 16, repeats: int = 3) -> dict:
    import numpy as np
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from omniforge_shared.backends import load_decoder
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_text.engine import TextEngine
    from omniforge_text.sampling import SamplingParams

    torch.set_num_threads(THREADS)
    bundle = load_bundle(starter_bundle())
    cfg = bundle.manifest["architecture"]["config"]
    tokenizer = load_tokenizer(bundle.file("tokenizer"))
    engine = TextEngine(load_decoder(bundle, threads=THREADS), tokenizer, max_batch_size=8)
    engine_int8 = TextEngine(load_decoder(bundle, threads=THREADS, int8=True), tokenizer, max_batch_size=8)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["block_size"],
                                    n_embd=cfg["n_embd"], n_layer=cfg["n_layer"], n_head=cfg["n_head"])).eval()
    rng = np.random.default_rng(0)
    prompts = [tokenizer.decode(rng.integers(0, 256, prompt_tokens).tolist()) for _ in range(8)]
    params = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)

    def ours(batch: int, engine=engine):
        return engine_tokens_per_s(engine, prompts[:batch], params)

    def theirs(batch: int) -> float:
        ids = torch.randint(0, cfg["vocab_size"], (batch, prompt_tokens))
        t = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        assert out.shape[1] == prompt_tokens + new_tokens
        return batch * new_tokens / (time.perf_counter() - t)

    rows = {}
    for batch in (1, 8):
        asyncio.run(ours(batch)), theirs(batch)                      # warm-up
        asyncio.run(ours(batch, engine_int8))
        o = max(asyncio.run(ours(batch)) for _ in range(repeats))
        q = max(asyncio.run(ours(batch, engine_int8)) for _ in range(repeats))
        h = max(theirs(batch) for _ in range(repeats))
        rows[f"batch_{batch}"] = {"ours_tokens_per_s": round(o, 1), "ours_int8_tokens_per_s": round(q, 1),
                                  "transformers_tokens_per_s": round(h, 1), "ratio": round(o / h, 2),
                                  "ratio_int8": round(q / h, 2)}
        print(f"decode batch {batch}: ours {o:,.0f} tok/s (INT8 {q:,.0f}), transformers {h:,.0f} tok/s, "
              f"ratio {o / h:.2f}x (INT8 {q / h:.2f}x)", file=sys.stderr)
    engine.stop()
    engine_int8.stop()
    return {"model": {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "vocab_size")},
            "new_tokens": new_tokens, "prompt_tokens": prompt_tokens, "goal_ratio": 3.0, **rows}


# ---- train -------------------------------------------------------------------------------------

def bench_train(steps: int = 150, warmup: int = 10, rounds: int = 3) -> dict:
    """Same dims, batch and context on the same text; tokens/s over `steps` steps after `warmup`,
    the two sides alternated `rounds` times (this machine's speed drifts) and the best of each kept."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from omniforge_training.train_text import TrainConfig, train_text

    dims = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12)
    B, T = dims["batch_size"], dims["block_size"]
    text = TINYSHAKESPEARE.read_text()
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = torch.tensor([stoi[c] for c in text])

    def ours() -> float:
        stamps = {}

        def clock(report):
            if report.step in (warmup, warmup + steps):
                stamps[report.step] = time.perf_counter()

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "train.txt"
            data.write_text(text)
            train_text(TrainConfig(data=str(data), out=tmp + "/run", tokenizer="char", max_iters=steps + warmup,
                                   eval_interval=0, checkpoint_interval=0, sample_tokens=0, threads=THREADS,
                                   lr=1e-3, **dims), on_step=clock, progress=False, log=lambda m: None)
        return steps * B * T / (stamps[warmup + steps] - stamps[warmup])

    def theirs() -> float:
        """A plain loop over GPT2LMHeadModel with AdamW and the same clipping."""
        torch.set_num_threads(THREADS)
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(stoi), n_positions=T, n_embd=dims["n_embd"],
                                           n_layer=dims["n_layer"], n_head=dims["n_head"], resid_pdrop=0.0,
                                           embd_pdrop=0.0, attn_pdrop=0.0))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()

        def step():
            starts = torch.randint(len(ids) - T - 1, (B,))
            x = torch.stack([ids[s:s + T] for s in starts])
            model(input_ids=x, labels=x).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        for _ in range(warmup):
            step()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * B * T / (time.perf_counter() - t)

    runs = {"ours": [], "theirs": []}
    for _ in range(rounds):
        runs["ours"].append(ours())
        runs["theirs"].append(theirs())
    o, h = max(runs["ours"]), max(runs["theirs"])
    print(f"train: ours {o:,.0f} tok/s, plain GPT2LMHeadModel loop {h:,.0f} tok/s, ratio {o / h:.2f}x "
          f"(best of {rounds} alternated runs)", file=sys.stderr)
    return {"dims": dims, "ours_tokens_per_s": round(o, 1), "transformers_loop_tokens_per_s": round(h, 1),
            "ratio": round(o / h, 2), "goal_ratio": 1.2,
            "runs": {k: [round(v, 1) for v in vs] for k, vs in runs.items()}}


# ---- quality -----------------------------------------------------------------------------------

def bench_quality() -> dict:
    """The reference recipe through our CLI, tinyshakespeare with the last 10% as validation."""
    text = TINYSHAKESPEARE.read_text()
    cut = int(len(text) * 0.9)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "train.txt").write_text(text[:cut])
        (Path(tmp) / "val.txt").write_text(text[cut:])
        cmd = [sys.executable, "-m", "omniforge_cli.main", "train", "text", "--data", f"{tmp}/train.txt",
               "--val-data", f"{tmp}/val.txt", "--tokenizer", "char", "--n-layer", "4", "--n-head", "4",
               "--n-embd", "128", "--block-size", "64", "--batch-size", "12", "--max-iters", "2000", "--lr", "1e-3",
               "--dropout", "0", "--seed", "1337", "--threads", str(THREADS), "--out", f"{tmp}/run", "--no-progress"]
        result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"quality: val loss {summary['val_loss']:.4f} (reference ~1.88, goal <= 1.80)", file=sys.stderr)
    return {"command": " ".join(["omniforge"] + cmd[3:]).replace(tmp, "<tmp>"), "reference_val_loss": 1.88,
            "goal_val_loss": 1.80, **summary}


# ---- gateway -----------------------------------------------------------------------------------

def _percentiles(samples: list[float]) -> dict:
    s = sorted(samples)
    return {"p50_ms": round(1000 * statistics.median(s), 3), "p99_ms": round(1000 * s[int(0.99 * (len(s) - 1))], 3)}


def bench_gateway(n: int = 400) -> dict:
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from support import Proc, free_port, grpc_serving, wait_for

    from omniforge_shared.backends import load_decoder
    from omniforge_shared.bundle import load_bundle
    from omniforge_shared.tokenizer import load_tokenizer
    from omniforge_text.engine import TextEngine
    from omniforge_text.sampling import SamplingParams

    bundle_dir = starter_bundle()
    body = {"prompt": "The", "max_tokens": 1, "temperature": 0}
    logs = Path(tempfile.mkdtemp())
    # 1. in-process engine
    bundle = load_bundle(bundle_dir)
    engine = TextEngine(load_decoder(bundle, threads=1), load_tokenizer(bundle.file("tokenizer")))

    async def inproc() -> list[float]:
        out = []
        for _ in range(n):
            t = time.perf_counter()
            async for _piece in engine.generate("The", SamplingParams(max_tokens=1, temperature=0)):
                pass
            out.append(time.perf_counter() - t)
        return out

    asyncio.run(inproc())
    engine_lat = asyncio.run(inproc())
    engine.stop()
    # 2. gateway -> gRPC -> text service, as separate processes
    tport, gport, eport = free_port(), free_port(), free_port()
    text = Proc("omniforge_text.server", {"OMNIFORGE_TEXT_BUNDLE": str(bundle_dir), "OMNIFORGE_TEXT_PORT": str(tport),
                                          "OMNIFORGE_TEXT_THREADS": "1"}, logs / "text.log").start()
    gateway = Proc("omniforge_gateway.app", {"OMNIFORGE_GATEWAY_PORT": str(gport),
                                             "OMNIFORGE_GATEWAY_TEXT_ADDRESS": f"127.0.0.1:{tport}", **TEXT_ONLY},
                   logs / "gw.log").start()
    echo = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo_app.py"), str(eport)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: grpc_serving(f"127.0.0.1:{tport}"))
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{gport}/readyz").status_code == 200)
        wait_for(lambda: httpx.post(f"http://127.0.0.1:{eport}/echo", json=body).status_code == 200)

        def measure(url: str) -> list[float]:
            out = []
            with httpx.Client() as client:
                for _ in range(50):
                    client.post(url, json=body)
                for _ in range(n):
                    t = time.perf_counter()
                    r = client.post(url, json=body)
                    out.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
            return out

        gw_lat = measure(f"http://127.0.0.1:{gport}/generate")
        echo_lat = measure(f"http://127.0.0.1:{eport}/echo")
        grpc_lat = asyncio.run(_grpc_round_trips(f"127.0.0.1:{tport}", n))
    finally:
        gateway.stop()
        text.stop()
        echo.terminate()
        echo.wait()
    e, g, f = _percentiles(engine_lat), _percentiles(gw_lat), _percentiles(echo_lat)
    r = _percentiles(grpc_lat)
    added = {"p50_ms": round(g["p50_ms"] - e["p50_ms"], 3), "p99_ms": round(g["p99_ms"] - e["p99_ms"], 3)}
    ratio = added["p50_ms"] / f["p50_ms"]
    # what any HTTP front that makes one gRPC call must add, even if it and the service cost nothing
    floor = (f["p50_ms"] + r["p50_ms"]) / f["p50_ms"]
    print(f"gateway: engine p50 {e['p50_ms']} ms, via gateway p50 {g['p50_ms']} ms, added {added['p50_ms']} ms; "
          f"bare FastAPI echo p50 {f['p50_ms']} ms; added/echo {ratio:.2f}x (goal <= 1.5)\n"
          f"         bare gRPC round trip (health check, same service) p50 {r['p50_ms']} ms: echo + gRPC floors "
          f"alone are {floor:.2f}x the echo", file=sys.stderr)
    return {"requests": n, "request": body, "engine_in_process": e, "gateway_http_grpc": g, "added": added,
            "fastapi_echo": f, "added_p50_over_echo_p50": round(ratio, 2), "goal_ratio": 1.5,
            "grpc_health_round_trip": r, "echo_plus_grpc_floor_over_echo": round(floor, 2)}


async def _grpc_round_trips(address: str, n: int) -> list[float]:
    """The bare gRPC round trip to the text service: a health check, which does no model work."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest()
        out = []
        for i in range(n + 50):
            t = time.perf_counter()
            await stub.Check(request, timeout=5)
            if i >= 50:
                out.append(time.perf_counter() - t)
        return out


BENCHES = {"decode": bench_decode, "train": bench_train, "quality": bench_quality, "gateway": bench_gateway,
           "served": bench_served, "ctranslate2": bench_ctranslate2, "vision": lambda: bench_vision(THREADS),
           "audio": lambda: bench_audio(1)}

if __name__ == "__main__":
    names = sys.argv[1:] or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        sys.exit(f"unknown benchmark {unknown}; choose from {list(BENCHES)}\n\n{__doc__}")
    print(f"threads: {THREADS}", file=sys.stderr)
    for name in names:
        save(name, BENCHES[name]())

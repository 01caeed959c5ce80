"""The engine on a real onnxruntime session of a model our pipeline trained."""
import asyncio
import subprocess
import sys

import pytest

from omniforge_shared.backends import load_decoder
from omniforge_shared.bundle import load_bundle
from omniforge_shared.tokenizer import load_tokenizer
from omniforge_text.engine import InvalidRequest, TextEngine
from omniforge_text.sampling import SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    eng = TextEngine(load_decoder(bundle, threads=1), load_tokenizer(bundle.file("tokenizer")), max_batch_size=8)
    yield eng
    eng.stop()


async def complete(engine, prompt, **params):
    pieces = [p async for p in engine.generate(prompt, SamplingParams(**params))]
    return "".join(p.text for p in pieces), pieces[-1]


async def test_same_seed_same_text_different_seed_different_text(engine):
    a, _ = await complete(engine, "HAMLET:\n", max_tokens=40, temperature=1.0, seed=11)
    b, _ = await complete(engine, "HAMLET:\n", max_tokens=40, temperature=1.0, seed=11)
    c, _ = await complete(engine, "HAMLET:\n", max_tokens=40, temperature=1.0, seed=12)
    assert a == b and a != c


async def test_concurrent_requests_are_batched_and_match_one_by_one(engine):
    prompts = ["HAMLET:\n", "To be", "The king", "O", "What is the matter, my lord?\n", "Ham"]
    alone = [await complete(engine, p, max_tokens=20, temperature=0) for p in prompts]
    before = engine.max_batch_seen
    engine.max_batch_seen = 0
    together = await asyncio.gather(*[complete(engine, p, max_tokens=20, temperature=0) for p in prompts])
    assert engine.max_batch_seen > 1, "concurrent requests ran one by one"
    assert [t for t, _ in together] == [t for t, _ in alone]
    engine.max_batch_seen = max(before, engine.max_batch_seen)


async def test_max_tokens_and_usage(engine):
    text, last = await complete(engine, "HAMLET:\n", max_tokens=17, temperature=0.8, seed=1)
    assert last.finish_reason == "length" and last.completion_tokens == 17
    assert last.prompt_tokens == len(engine.tokenizer.encode("HAMLET:\n"))
    assert len(text) == 17   # one character per token for this char-level model


async def test_stop_sequences_end_generation_before_the_stop_string(engine):
    full, _ = await complete(engine, "HAMLET:\n", max_tokens=50, temperature=0)
    stop = full[10:13]
    text, last = await complete(engine, "HAMLET:\n", max_tokens=50, temperature=0, stop=(stop,))
    assert last.finish_reason == "stop"
    assert text == full[:full.index(stop)] and stop not in text


async def test_top_k_1_is_greedy_and_penalty_changes_the_text(engine):
    greedy, _ = await complete(engine, "The ", max_tokens=30, temperature=0)
    top1, _ = await complete(engine, "The ", max_tokens=30, temperature=1.5, top_k=1, seed=3)
    assert greedy == top1
    penalised, _ = await complete(engine, "The ", max_tokens=30, temperature=0, repetition_penalty=3.0)
    assert penalised != greedy


async def test_closing_the_stream_cancels_the_sequence(engine):
    stream = engine.generate("HAMLET:\n", SamplingParams(max_tokens=50, temperature=0.8, seed=5))
    await stream.__anext__()
    await stream.aclose()
    for _ in range(50):
        if not engine._running:
            break
        await asyncio.sleep(0.02)
    assert engine._running == []


@pytest.mark.parametrize("params, message", [
    (dict(max_tokens=0), "max_tokens=0 is out of range"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(temperature=-1), "temperature=-1"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(max_tokens=60), "exceeds the context of 64 tokens; send max_tokens <= "),
])
async def test_bad_parameters_say_what_to_send(engine, params, message):
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        await complete(engine, "HAMLET:\n", **params)


async def test_a_prompt_longer_than_the_context_is_refused(engine):
    with pytest.raises(InvalidRequest, match="prompt is 100 tokens; the model's context is 64 tokens"):
        await complete(engine, "x" * 100, max_tokens=1)


def test_score_gives_lower_perplexity_to_shakespeare_than_to_noise(engine):
    import math

    good_ll, n = engine.score("To be, or not to be, that is the question:")
    bad_ll, m = engine.score("qzx vvkj pwq zzt xqj kkq vvz qjx pzq wzx")
    assert math.exp(-good_ll / n) < math.exp(-bad_ll / m)


def test_the_serving_path_imports_no_torch(tiny_bundle):
    code = (
        "import sys, asyncio\n"
        "from omniforge_text.settings import TextServiceSettings\n"
        "from omniforge_text import server, servicer\n"
        "import omniforge_gateway.app\n"
        f"pool = server.make_pool(TextServiceSettings(bundle={str(tiny_bundle)!r}, threads=1))\n"
        "pool.load_configured()\n"
        "pool.stop()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print('no torch')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "no torch" in result.stdout, result.stderr


async def test_torch_backend_gives_the_same_greedy_text_as_onnxruntime(tiny_bundle, engine):
    bundle = load_bundle(tiny_bundle)
    torch_engine = TextEngine(load_decoder(bundle, backend="torch", threads=1),
                              load_tokenizer(bundle.file("tokenizer")))
    try:
        for prompt in ("HAMLET:\n", "To be"):
            assert (await complete(torch_engine, prompt, max_tokens=30, temperature=0))[0] == \
                   (await complete(engine, prompt, max_tokens=30, temperature=0))[0]
    finally:
        torch_engine.stop()


def test_unknown_backend_is_refused(tiny_bundle):
    with pytest.raises(ValueError, match="use one of"):
        load_decoder(load_bundle(tiny_bundle), backend="tensorflow")


async def test_a_failing_prefill_fails_its_requests_and_the_engine_recovers(tiny_bundle):
    """The error reaches the requests being admitted (not only those already running)."""
    bundle = load_bundle(tiny_bundle)
    backend = load_decoder(bundle, threads=1)
    forward, broken = backend.forward, [True]

    def flaky(input_ids, *rest):
        if broken[0] and input_ids.shape[1] > 1:
            raise RuntimeError("device lost")
        return forward(input_ids, *rest)

    backend.forward = flaky
    eng = TextEngine(backend, load_tokenizer(bundle.file("tokenizer")))
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            await asyncio.wait_for(complete(eng, "HAMLET:\n", max_tokens=5, temperature=0), timeout=10)
        broken[0] = False
        text, last = await asyncio.wait_for(complete(eng, "HAMLET:\n", max_tokens=5, temperature=0), timeout=10)
        assert last.finish_reason == "length" and last.completion_tokens == 5
    finally:
        eng.stop()


async def test_a_stream_of_arrivals_does_not_starve_running_sequences(tiny_bundle):
    """Admissions alternate with decode steps: a long generation keeps going while a queue of
    short requests is admitted one by one."""
    bundle = load_bundle(tiny_bundle)
    eng = TextEngine(load_decoder(bundle, threads=1), load_tokenizer(bundle.file("tokenizer")), max_batch_size=2)
    events = []

    async def long():
        async for p in eng.generate("HAMLET:\n", SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)):
            events.append(("long", p.completion_tokens))

    async def short(i):
        await complete(eng, "To be", max_tokens=1, temperature=0)
        events.append(("short", i))

    try:
        task = asyncio.ensure_future(long())
        while not events:                       # the long one is running
            await asyncio.sleep(0.001)
        await asyncio.gather(*[short(i) for i in range(20)], task)
    finally:
        eng.stop()
    done_shorts = [i for i, e in enumerate(events) if e[0] == "short"]
    tokens_by_half = max([n for kind, n in events[:done_shorts[9]] if kind == "long"], default=0)
    assert tokens_by_half >= 8, events       # about one token per admission (3 without alternating)


async def test_a_unary_request_gets_one_piece_with_the_streamed_text(engine):
    params = SamplingParams(max_tokens=25, temperature=0.9, seed=4)
    streamed = [p async for p in engine.generate("HAMLET:\n", params)]
    whole = [p async for p in engine.generate("HAMLET:\n", params, stream=False)]
    # (a stream's pieces merge while its reader lags, so on a loaded machine it may be one piece too)
    assert len(streamed) >= 1 and len(whole) == 1
    assert whole[0].text == "".join(p.text for p in streamed) and whole[0].completion_tokens == 25
    assert 0 < whole[0].first_token_at


async def test_a_stream_interval_sends_a_few_tokens_a_message(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    eng = TextEngine(load_decoder(bundle, threads=1), load_tokenizer(bundle.file("tokenizer")),
                     stream_interval_s=10.0)
    try:
        pieces = [p async for p in eng.generate("HAMLET:\n", SamplingParams(max_tokens=30, temperature=0))]
    finally:
        eng.stop()
    # the first piece at once (time to first token is not delayed), the rest at the end; when the
    # tiny model's first tokens decode to nothing yet (held back by the detokenizer), it is one piece
    assert len(pieces) <= 2 and pieces[-1].finish_reason == "length" and pieces[-1].completion_tokens == 30
    if len(pieces) == 2:
        assert pieces[0].completion_tokens < 5
    assert "".join(p.text for p in pieces) == (await complete_in(tiny_bundle, "HAMLET:\n"))


async def complete_in(tiny_bundle, prompt):
    bundle = load_bundle(tiny_bundle)
    eng = TextEngine(load_decoder(bundle, threads=1), load_tokenizer(bundle.file("tokenizer")))
    try:
        return (await complete(eng, prompt, max_tokens=30, temperature=0))[0]
    finally:
        eng.stop()


def test_sampling_draws_what_rng_choice_draws_for_the_same_seed():
    import numpy as np

    from omniforge_text.sampling import sample_token

    logits = np.random.default_rng(0).normal(size=4096).astype(np.float32) * 3
    params = SamplingParams(temperature=0.8, top_k=50, top_p=0.9)
    for seed in range(200):
        ours = sample_token(logits, params, np.random.default_rng(seed))
        # the same filtering, then numpy's own draw
        z = logits.astype(np.float64) / 0.8
        z[z < np.partition(z, -50)[-50]] = -np.inf
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p)
        keep = order[:int(np.searchsorted(np.cumsum(p[order]), 0.9)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        assert ours == np.random.default_rng(seed).choice(q.size, p=q / q.sum())


def test_a_batch_draws_what_each_row_draws_alone():
    """sample_tokens (one softmax and draw for the plain rows, one argmax for the greedy ones)
    picks, row for row, what sample_token picks with the same generator."""
    import numpy as np

    from omniforge_text.sampling import sample_token, sample_tokens

    logits = np.random.default_rng(1).normal(size=(6, 4096)).astype(np.float32) * 3
    params = [SamplingParams(temperature=0.8), SamplingParams(temperature=0), SamplingParams(temperature=1.3),
              SamplingParams(temperature=0.7, top_k=20), SamplingParams(temperature=0, repetition_penalty=1.5),
              SamplingParams(temperature=0.5)]
    seen = [[1, 2, 3]] * 6
    for seed in range(100):
        batch = sample_tokens(logits, params, [np.random.default_rng(seed + i) for i in range(6)], seen)
        alone = [sample_token(logits[i], p, np.random.default_rng(seed + i),
                              np.array(seen[i]) if p.repetition_penalty != 1.0 else None)
                 for i, p in enumerate(params)]
        assert batch == alone


def _slow_decoder(tiny_bundle):
    """The tiny model's decoder at 5 ms a step, so a 50-token generation outlasts the requests
    a test sends while it runs, however loaded the machine is."""
    import time

    backend = load_decoder(load_bundle(tiny_bundle), threads=1)
    forward = backend.forward

    def slow(*args):
        time.sleep(0.005)
        return forward(*args)

    backend.forward = slow
    return backend


async def _a_long_generation_running(eng) -> asyncio.Future:
    """A 50-token generation, once its first token is out (await the result to let it finish)."""
    started = asyncio.Event()

    async def long():
        async for _ in eng.generate("HAMLET:\n", SamplingParams(max_tokens=50, temperature=0, ignore_eos=True)):
            started.set()

    task = asyncio.ensure_future(long())
    await started.wait()
    return task


async def test_a_short_prompt_joins_a_running_batch_without_a_prefill_step(tiny_bundle):
    """While a generation runs, short prompts are fed to the decode steps a token a step: no
    prefill step stalls the running sequence, and each reply is what it is alone."""
    eng = TextEngine(_slow_decoder(tiny_bundle), load_tokenizer(load_bundle(tiny_bundle).file("tokenizer")),
                     feed_prompt_tokens=8)
    prompts = ["To be", "O", "The king"]
    try:
        alone = [await complete(eng, p, max_tokens=12, temperature=0) for p in prompts]
        task = await _a_long_generation_running(eng)
        prefills = eng.prefill_steps
        joined = await asyncio.gather(*[complete(eng, p, max_tokens=12, temperature=0) for p in prompts])
        assert eng.prefill_steps == prefills, "a short prompt stopped the running batch for a prefill"
        assert [t for t, _ in joined] == [t for t, _ in alone]
        assert [last.prompt_tokens for _, last in joined] == [last.prompt_tokens for _, last in alone]
        await task
    finally:
        eng.stop()


async def test_a_long_prompt_still_gets_a_prefill_step(tiny_bundle):
    eng = TextEngine(_slow_decoder(tiny_bundle), load_tokenizer(load_bundle(tiny_bundle).file("tokenizer")),
                     feed_prompt_tokens=4)
    try:
        task = await _a_long_generation_running(eng)
        prefills = eng.prefill_steps
        text, _ = await complete(eng, "What is the matter, my lord?\n", max_tokens=5, temperature=0)
        assert eng.prefill_steps == prefills + 1 and len(text) == 5
        await task
    finally:
        eng.stop()

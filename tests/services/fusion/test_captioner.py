"""The caption engine on a real captioner bundle: batching changes nothing, beams and sampling
behave, prompts steer, bad requests are refused."""
import io
from concurrent.futures import wait

import numpy as np
import pytest
from PIL import Image

from omniforge_fusion.captioner import CaptionEngine, CaptionParams
from omniforge_fusion.engine import InvalidInput
from omniforge_shared.bundle import load_bundle
from omniforge_training.data.image_text import load_image_text


def png(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def engine(tiny_caption_bundle):
    e = CaptionEngine(load_bundle(tiny_caption_bundle), threads=1, max_batch=8)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def images(tiny_images):
    ds = load_image_text(tiny_images)
    return [png(ds.images[i]) for i in range(0, 40, 5)]


def test_a_batch_gives_what_each_request_gives_alone(engine, images):
    alone = [engine.submit(im, CaptionParams(max_tokens=8)).result(timeout=30).text for im in images[:4]]
    futures = [engine.submit(im, CaptionParams(max_tokens=8)) for im in images[:4]]
    wait(futures, timeout=30)
    assert [f.result().text for f in futures] == alone
    assert all(alone)


def test_greedy_equals_one_beam_and_sampling_follows_its_seed(engine, images):
    greedy = engine.submit(images[0], CaptionParams(max_tokens=8)).result(timeout=30)
    one_beam = engine.submit(images[0], CaptionParams(max_tokens=8, num_beams=1)).result(timeout=30)
    assert greedy.text == one_beam.text
    beams = engine.submit(images[0], CaptionParams(max_tokens=8, num_beams=3)).result(timeout=30)
    assert beams.text and beams.finish_reason in ("stop", "length")
    a = engine.submit(images[0], CaptionParams(max_tokens=8, temperature=1.0, seed=7)).result(timeout=30)
    b = engine.submit(images[0], CaptionParams(max_tokens=8, temperature=1.0, seed=7)).result(timeout=30)
    others = {engine.submit(images[0], CaptionParams(max_tokens=8, temperature=1.0, seed=s)).result(timeout=30).text
              for s in range(8)}
    assert a.text == b.text and len(others) > 1


def test_a_prompt_changes_the_answer(engine, images):
    plain = engine.submit(images[1], CaptionParams(max_tokens=6)).result(timeout=30).text
    colours = engine.submit(images[1], CaptionParams(max_tokens=6, prompt="describe the colours")).result(timeout=30).text
    assert plain != colours


@pytest.mark.parametrize("params, says", [
    (CaptionParams(max_tokens=0), "max_tokens=0 is out of range"),
    (CaptionParams(num_beams=9), "num_beams=9 is out of range"),
    (CaptionParams(num_beams=2, temperature=0.5), "beam search is deterministic"),
    (CaptionParams(prompt="x" * 500), "at most 200"),
])
def test_bad_parameters_are_refused(engine, images, params, says):
    with pytest.raises(InvalidInput, match=says):
        engine.submit(images[0], params)


def test_bad_images_are_refused_and_the_engine_goes_on(engine, images):
    with pytest.raises(InvalidInput, match="not an image format"):
        engine.submit(b"definitely not an image", CaptionParams())
    assert engine.submit(images[0], CaptionParams(max_tokens=4)).result(timeout=30).text


def test_every_caption_says_something(engine):
    """A blank or unfamiliar image still gets words, by every decoder: the end token cannot come first."""
    blank = png(np.full((32, 32, 3), 200, np.uint8))
    for params in (CaptionParams(max_tokens=6), CaptionParams(max_tokens=6, num_beams=3),
                   CaptionParams(max_tokens=6, temperature=1.0, seed=1)):
        caption = engine.submit(blank, params).result(timeout=30)
        assert caption.text and caption.tokens >= 1, params

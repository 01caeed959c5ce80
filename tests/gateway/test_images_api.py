"""POST /images/generations through the real gateway and image service: OpenAI's shape, seeds,
sizes, streaming progress and previews, and clear refusals."""
import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from support import grpc_serving


@pytest.fixture(scope="module")
def http(vision_gateway):
    with httpx.Client(base_url=vision_gateway.url, timeout=120) as c:
        yield c


def decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_generations_have_openai_shape_and_follow_the_seed(http):
    r = http.post("/images/generations", json={"prompt": "an emoji of a red heart", "n": 2, "steps": 4, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["created"], int) and body["model"] == "tiny-diffusion" and len(body["data"]) == 2
    a, b = (decode(d["b64_json"]) for d in body["data"])
    assert a.shape == (16, 16, 3) and a.dtype == np.uint8 and not np.array_equal(a, b)
    assert [d["seed"] for d in body["data"]] == [5, 6]
    again = http.post("/images/generations", json={"prompt": "an emoji of a red heart", "n": 1, "steps": 4,
                                                   "seed": 5}).json()
    assert np.array_equal(decode(again["data"][0]["b64_json"]), a)     # image 0 alone = image 0 in a batch
    big = http.post("/images/generations", json={"prompt": "a cat", "steps": 2, "size": "64x64"}).json()
    assert decode(big["data"][0]["b64_json"]).shape == (64, 64, 3)


def test_the_openai_client_calls_it(vision_gateway):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=vision_gateway.url, api_key="unused")
    result = client.images.generate(prompt="a bat", n=1, size="16x16", response_format="b64_json",
                                    extra_body={"steps": 2, "seed": 1})
    assert decode(result.data[0].b64_json).shape == (16, 16, 3)


def test_streaming_sends_progress_previews_and_images(http):
    events = []
    with http.stream("POST", "/images/generations", json={"prompt": "a smiling face", "n": 1, "steps": 4,
                                                          "stream": True, "preview_every": 2, "seed": 3}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    kinds = [e["type"] for e in parsed]
    assert kinds.count("image_generation.progress") == 4 and kinds[-1] == "image_generation.completed"
    assert kinds.count("image_generation.partial_image") == 1           # at step 2 (none after the last step)
    preview = next(e for e in parsed if e["type"] == "image_generation.partial_image")
    assert decode(preview["b64_json"]).shape == (16, 16, 3)


@pytest.mark.parametrize("body, status, says", [
    ({"prompt": "x", "n": 0}, 422, "n"),
    ({"prompt": "x", "n": 9}, 422, "n"),
    ({"prompt": "x", "steps": 0}, 422, "steps"),
    ({"prompt": "x", "steps": 500}, 422, "steps"),
    ({"prompt": "x", "size": "64x32"}, 422, "square"),
    ({"prompt": "x", "size": "24x24"}, 400, "served at 16, 32"),
    ({"prompt": "x", "response_format": "url"}, 400, "b64_json"),
    ({"prompt": ""}, 422, "prompt"),
    ({"prompt": "x", "guidance": 99}, 422, "guidance"),
])
def test_out_of_range_requests_are_refused(http, image_service, body, status, says):
    r = http.post("/images/generations", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]
    assert grpc_serving(image_service.address)


def test_encode_over_grpc_matches_the_fusion_embedding(image_service, fusion_service, tiny_images):
    import grpc

    from omniforge_proto.v1 import fusion_pb2, fusion_pb2_grpc, image_pb2, image_pb2_grpc
    from omniforge_training.data.image_text import load_image_text

    buf = io.BytesIO()
    Image.fromarray(np.asarray(load_image_text(tiny_images).images[0])).save(buf, "PNG")
    with grpc.insecure_channel(image_service.address) as ch:
        enc = image_pb2_grpc.ImageServiceStub(ch).Encode(image_pb2.EncodeImagesRequest(images=[buf.getvalue()]))
    with grpc.insecure_channel(fusion_service.address) as ch:
        emb = fusion_pb2_grpc.FusionServiceStub(ch).Embed(fusion_pb2.EmbedRequest(
            inputs=[fusion_pb2.EmbedInput(image=buf.getvalue())]))
    assert np.allclose(enc.embeddings[0].values, emb.embeddings[0].values, atol=1e-5)


def test_the_sdk_generates_and_captions(vision_gateway, tiny_images):
    from omniforge_sdk import Client

    with Client(base_url=vision_gateway.url) as client:
        [img] = client.images.generate(prompt="a red heart", steps=2, seed=9)
        assert img.seed == 9 and Image.open(io.BytesIO(img.png)).size == (16, 16)
        caption = client.caption(image=img.png, max_tokens=6)
        assert caption.caption and caption.model == "tiny-captioner"


def test_the_image_service_counts_what_it_generates(http, image_service):
    http.post("/images/generations", json={"prompt": "a star", "n": 2, "steps": 2})
    text = httpx.get(image_service.metrics_url).text
    line = next(l for l in text.splitlines()
                if l.startswith('omniforge_image_images_generated_total{model="tiny-diffusion"'))
    assert float(line.split()[-1]) >= 2
    assert 'omniforge_image_requests_total{model="tiny-diffusion",route="Generate",status="OK"' in text \
        or 'route="Generate"' in text

"""/embed, /search and collections through the real gateway and the real fusion service (its
ChromaDB embedded); and every kind of bad image gets a 4xx naming what to send, while the
service stays up."""
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from omniforge_training.data.image_text import load_image_text
from support import grpc_serving


@pytest.fixture(scope="module")
def http(vision_gateway):
    with httpx.Client(base_url=vision_gateway.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def starter(tiny_images):
    return load_image_text(tiny_images)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(pixels)).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_embed_texts_and_images_into_one_unit_space(http, starter):
    r = http.post("/embed", json={"input": ["red heart", "grinning face"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "tiny-clip" and body["dimensions"] == 256
    vecs = np.array([d["embedding"] for d in body["data"]])
    assert vecs.shape == (2, 256) and [d["index"] for d in body["data"]] == [0, 1]
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    image = png(starter.images[0])
    as_json = np.array(http.post("/embed", json={"image": b64(image)}).json()["data"][0]["embedding"])
    as_file = np.array(http.post("/embed", files={"file": ("x.png", image, "image/png")}).json()["data"][0]["embedding"])
    assert np.allclose(as_json, as_file, atol=1e-6) and abs(np.linalg.norm(as_file) - 1) < 1e-4
    # a data: URL works too
    data_url = f"data:image/png;base64,{b64(image)}"
    assert http.post("/embed", json={"image": data_url}).status_code == 200


def test_user_collection_add_search_delete(http, starter):
    # index three training images of different concepts, search with one of them
    picks = [0, 5, 11]
    items = [{"id": f"img-{i}", "caption": starter.concepts[starter.item_concept[i]]["name"],
              "image": b64(png(starter.images[i])), "metadata": {"style": starter.item_style[i], "n": i}}
             for i in picks]
    items.append({"id": "note", "caption": "a note indexed by its caption only"})
    r = http.post("/collections/my-pics/items", json={"items": items})
    assert r.status_code == 200, r.text
    assert r.json() == {"collection": "my-pics", "added": 4, "deleted": 0, "count": 4}
    hits = http.post("/search", files={"file": ("q.png", png(starter.images[5]))},
                     data={"collection": "my-pics", "k": "2"}).json()
    assert hits["results"][0]["id"] == "img-5" and hits["results"][0]["score"] > 0.99
    assert hits["results"][0]["metadata"] == {"style": starter.item_style[5], "n": 5}
    assert len(hits["results"]) == 2
    listed = {c["name"]: c for c in http.get("/collections").json()["collections"]}
    assert listed["my-pics"]["count"] == 4 and listed["my-pics"]["model"] == "tiny-clip"
    # re-adding an id replaces it; deleting removes it, and unknown ids are ignored
    assert http.post("/collections/my-pics/items", json={"items": items[:1]}).json()["count"] == 4
    gone = http.request("DELETE", "/collections/my-pics/items", json={"ids": ["img-5", "nope"]}).json()
    assert gone == {"collection": "my-pics", "added": 0, "deleted": 1, "count": 3}
    after = http.post("/search", json={"image": b64(png(starter.images[5])), "collection": "my-pics", "k": 3}).json()
    assert "img-5" not in [h["id"] for h in after["results"]]
    text_hits = http.post("/search", json={"query": "a note", "collection": "my-pics", "k": 1}).json()
    assert text_hits["results"][0]["caption"]


def test_search_errors_name_what_to_send(http):
    r = http.post("/search", json={"query": "x", "collection": "no-such-collection"})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]["message"]
    r = http.post("/search", json={"query": "x", "k": 0})
    assert r.status_code == 422 and "k" in r.json()["error"]["message"]
    r = http.post("/search", json={"query": "x", "image": "aGVsbG8="})
    assert r.status_code == 422 and "exactly one of" in r.json()["error"]["message"]
    r = http.post("/collections/a/items", json={"items": [{"id": "x", "caption": "y"}]})
    assert r.status_code == 400 and "3-64 characters" in r.json()["error"]["message"]
    r = http.post("/collections/ok-name/items", json={"items": [{"id": "x"}]})
    assert r.status_code == 400 and "neither an image nor a caption" in r.json()["error"]["message"]


def frames_gif() -> bytes:
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=80)
    return buf.getvalue()


@pytest.mark.parametrize("label, data, status, says", [
    ("not an image", b"%PDF-1.4 definitely not a picture", 400, "not an image format we read"),
    ("0-byte upload", b"", 400, "empty (0 bytes)"),
    ("animated GIF", None, 400, "animated"),
    ("truncated PNG", None, 400, "truncated or corrupt"),
    ("decompression bomb", None, 400, "pixels; the limit is"),
    ("SVG with external references", b'<svg xmlns="http://www.w3.org/2000/svg"><image href="file:///etc/passwd"/></svg>',
     400, "self-contained SVG"),
    ("oversized upload", b"\x89PNG" + b"\0" * (3 * 2**20), 413, "over 2 MB"),
])
def test_bad_images_get_4xx_and_the_service_stays_up(http, fusion_service, starter, label, data, status, says):
    import struct
    import zlib

    if label == "animated GIF":
        data = frames_gif()
    elif label == "truncated PNG":
        full = png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        data = full[: len(full) // 2]
    elif label == "decompression bomb":
        def chunk(kind, payload):
            return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60_000, 60_000, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    for send in ("file", "json"):
        if send == "file":
            r = http.post("/embed", files={"file": ("upload.bin", data)})
        else:
            r = http.post("/embed", json={"image": b64(data)})
        assert r.status_code == status, (label, send, r.text)
        message = r.json()["error"]["message"]
        assert says in message, (label, message)
    assert grpc_serving(fusion_service.address)
    ok = http.post("/embed", json={"image": b64(png(starter.images[0]))})
    assert ok.status_code == 200


def test_sixteen_bit_png_and_cmyk_jpeg_are_converted_not_refused(http):
    grey16 = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    cmyk = Image.new("CMYK", (64, 64), (0, 200, 200, 0))
    for img, fmt in ((grey16, "PNG"), (cmyk, "JPEG")):
        buf = io.BytesIO()
        img.save(buf, fmt)
        r = http.post("/embed", files={"file": (f"x.{fmt.lower()}", buf.getvalue())})
        assert r.status_code == 200, r.text


def test_base64_that_is_not_base64(http):
    r = http.post("/embed", json={"image": "this is *not* base64!"})
    assert r.status_code == 400 and "not valid base64" in r.json()["error"]["message"]
    r = http.post("/embed", json={"input": ""})
    assert r.status_code == 400 and "empty text" in r.json()["error"]["message"]
    r = http.post("/embed", json={"input": ["x"] * 300})
    assert r.status_code == 422 and "send 1 to 256" in r.json()["error"]["message"]
    r = http.post("/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_the_sdk_reads_like_the_api(vision_gateway, starter, tmp_path):
    import asyncio

    from omniforge_sdk import AsyncClient, BadRequestError, Client, NotFoundError

    path = tmp_path / "q.png"
    path.write_bytes(png(starter.images[3]))
    with Client(base_url=vision_gateway.url) as client:
        emb = client.embeddings.create(input=["a red heart", "a cat"])
        assert len(emb.vectors) == 2 and emb.dimensions == 256
        assert client.collections.add("sdk-pics", items=[{"id": "p3", "caption": "three", "image": path},
                                                         {"id": "t", "caption": "just text"}]) == 2
        hits = client.search(image=path, k=1, collection="sdk-pics")
        assert hits[0].id == "p3" and hits[0].score > 0.99
        assert "sdk-pics" in [c.name for c in client.collections.list()]
        assert client.collections.delete("sdk-pics", ids=["t"]) == 1
        with pytest.raises(BadRequestError, match="not valid base64|not an image"):
            client.embeddings.create(image=b"nope")
        with pytest.raises(NotFoundError):
            client.search(query="x", collection="missing-one")

    async def run():
        async with AsyncClient(base_url=vision_gateway.url) as client:
            emb = await client.embeddings.create(image=path)
            hits = await client.search(query="three", collection="sdk-pics", k=1)
            return emb, hits
    emb, hits = asyncio.run(run())
    assert emb.dimensions == 256 and hits[0].id == "p3"


def test_caption_from_a_file_or_base64(http, starter):
    image = png(starter.images[2])
    by_file = http.post("/caption", files={"file": ("x.png", image)}, data={"max_tokens": "8"})
    assert by_file.status_code == 200, by_file.text
    body = by_file.json()
    assert body["caption"] and body["model"] == "tiny-captioner" and body["finish_reason"] in ("stop", "length")
    by_json = http.post("/caption", json={"image": b64(image), "max_tokens": 8}).json()
    assert by_json["caption"] == body["caption"]                       # greedy: the same caption
    beams = http.post("/caption", json={"image": b64(image), "num_beams": 3, "max_tokens": 8})
    assert beams.status_code == 200
    prompted = http.post("/caption", json={"image": b64(image), "prompt": "describe the colours", "max_tokens": 6})
    assert prompted.status_code == 200


def test_caption_refusals(http, fusion_service):
    r = http.post("/caption", json={"max_tokens": 8})
    assert r.status_code == 422 and "multipart `file` or as base64" in r.json()["error"]["message"]
    r = http.post("/caption", json={"image": b64(b"GIF89a nonsense"), "max_tokens": 8})
    assert r.status_code == 400 and "send" in r.json()["error"]["message"]
    r = http.post("/caption", json={"image": "aGk=", "num_beams": 12})
    assert r.status_code == 422 and "num_beams" in r.json()["error"]["message"]
    r = http.post("/caption", json={"image": "aGk=", "num_beams": 2, "temperature": 0.7})
    assert r.status_code == 422 and "deterministic" in r.json()["error"]["message"]
    assert grpc_serving(fusion_service.address)


# ---- spoken queries: the audio tower in the tiny CLIP's space ----------------------------------

def wav(x: np.ndarray, rate: int = 16_000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def spoken(tiny_speech):
    from omniforge_training.data.speech import load_speech

    ds = load_speech(tiny_speech)
    return [(it["text"], wav(ds.audio(it), ds.sample_rate)) for it in ds.split("train")[:3]]


def test_spoken_queries_embed_and_search(http, spoken, vision_gateway):
    text, clip = spoken[0]
    as_json = http.post("/embed", json={"audio": b64(clip)})
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["dimensions"] == 256
    v = np.array(as_json.json()["data"][0]["embedding"])
    assert abs(np.linalg.norm(v) - 1) < 1e-4
    as_file = http.post("/embed", files={"file": ("q.wav", clip, "audio/wav")})
    assert as_file.status_code == 200, as_file.text
    assert np.allclose(v, as_file.json()["data"][0]["embedding"], atol=1e-5)
    # the tower's vector is nearer its sentence's text vector than another sentence's
    t = np.array([d["embedding"] for d in http.post("/embed", json={"input": [text, "a completely different thing"]})
                  .json()["data"]])
    assert t[0] @ v > t[1] @ v
    # a user collection searched by voice: the item captioned with the spoken sentence comes first
    items = [{"id": f"s{i}", "caption": s} for i, (s, _) in enumerate(spoken)]
    assert http.post("/collections/spoken-test/items", json={"items": items}).status_code == 200
    r = http.post("/search", files={"file": ("q.flac", clip)}, data={"collection": "spoken-test", "k": "3"})
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 3
    r = http.post("/search", json={"audio": b64(clip), "collection": "spoken-test", "k": 3})
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    # the SDK: audio= beside input= / query= and image=
    from omniforge_sdk import Client

    with Client(base_url=vision_gateway.url) as client:
        assert np.allclose(client.embeddings.create(audio=clip).vectors[0], v, atol=1e-5)
        assert [h.id for h in client.search(audio=clip, collection="spoken-test", k=3)] == \
            [h["id"] for h in r.json()["results"]]
        with pytest.raises(ValueError, match="exactly one of"):
            client.search(query="x", audio=clip)


@pytest.mark.parametrize("label, data, status, says", [
    ("not audio", b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", 415, "audio:"),
    ("silence", None, 400, "silent"),
    ("too long", None, 413, "at most 60 s"),
    ("8 channels", None, 400, "channels"),
])
def test_bad_spoken_queries_get_4xx(http, fusion_service, label, data, status, says):
    if label == "silence":
        data = wav(np.zeros(16_000, np.float32))
    elif label == "too long":
        data = wav(np.random.default_rng(0).standard_normal(16_000 * 61).astype(np.float32) * 0.1)
    elif label == "8 channels":
        data = wav(np.random.default_rng(0).standard_normal((8_000, 8)).astype(np.float32) * 0.1)
    for send in ("file", "json"):
        r = (http.post("/embed", files={"file": ("q.wav", data)}) if send == "file"
             else http.post("/embed", json={"audio": b64(data)}))
        assert r.status_code == status, (label, send, r.text)
        assert says in r.json()["error"]["message"], (label, r.text)
    assert grpc_serving(fusion_service.address)
    assert http.post("/embed", json={"audio": "", "input": "x"}).status_code == 422

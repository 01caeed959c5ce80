"""The OpenAI-compatible API, called with the official `openai` package, unchanged but for its
base_url: a real gateway in front of the real text, fusion, image and audio services."""
import base64
import io

import httpx
import numpy as np
import pytest
import soundfile as sf
from PIL import Image


openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client(full_gateway):
    return openai.OpenAI(base_url=f"{full_gateway.url}/v1", api_key="sk-local", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def http(full_gateway):
    with httpx.Client(base_url=full_gateway.url, timeout=120) as c:
        yield c


def png_data_url(seed: int = 0) -> tuple[str, bytes]:
    pixels = np.full((32, 32, 3), 255, np.uint8)
    pixels[8:24, 8:24] = np.random.default_rng(seed).integers(0, 255, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), buf.getvalue()


# ---- models ---------------------------------------------------------------------------------------

def test_models_lists_every_service_model_and_retrieves_one(client):
    ids = {m.id for m in client.models.list()}
    assert {"tiny", "tiny-clip", "tiny-diffusion", "asr-starter", "tts-starter"} <= ids
    tiny = client.models.retrieve("tiny")
    assert tiny.id == "tiny" and tiny.object == "model" and isinstance(tiny.created, int) and tiny.owned_by
    with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
        client.models.retrieve("no-such-model")


# ---- completions ----------------------------------------------------------------------------------

def test_completions_follow_the_seed_and_count_tokens(client):
    a = client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=12, temperature=0.9, seed=7)
    b = client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=12, temperature=0.9, seed=7)
    assert a.object == "text_completion" and a.model == "tiny" and a.id.startswith("cmpl-")
    assert a.choices[0].text == b.choices[0].text and a.choices[0].text
    assert a.usage.completion_tokens == 12 and a.choices[0].finish_reason == "length"
    assert a.usage.total_tokens == a.usage.prompt_tokens + 12


def test_completions_n_and_a_list_of_prompts_number_the_choices(client):
    r = client.completions.create(model="tiny", prompt=["To be", "The king"], n=2, max_tokens=10, temperature=1.0,
                                  seed=3)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert r.choices[0].text != r.choices[1].text          # each choice its own seed
    alone = client.completions.create(model="tiny", prompt="The king", max_tokens=10, temperature=1.0, seed=3)
    assert r.choices[2].text == alone.choices[0].text      # prompt 1's first choice is the request's seed
    assert r.usage.completion_tokens == 40
    echoed = client.completions.create(model="tiny", prompt="To be", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("To be")


def test_streamed_completion_equals_the_whole_one_and_ends_with_usage(client):
    whole = client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=16, temperature=0.8, seed=5)
    chunks = list(client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=16, temperature=0.8,
                                            seed=5, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16


def test_stop_ends_a_completion_before_the_stop_string(client):
    full = client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=30, temperature=0).choices[0].text
    stop = full[8:11]
    cut = client.completions.create(model="tiny", prompt="HAMLET:\n", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == full[:full.index(stop)] and cut.choices[0].finish_reason == "stop"


# ---- chat -----------------------------------------------------------------------------------------

def test_chat_renders_the_conversation_with_the_models_template(client, http):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who?"}]
    r = client.chat.completions.create(model="tiny", messages=messages, max_completion_tokens=20, temperature=0)
    msg = r.choices[0].message
    assert r.object == "chat.completion" and msg.role == "assistant" and r.id.startswith("chatcmpl-")
    # the same text as the template's prompt sent to /generate, cut where the assistant's turn ends
    prompt = "Be brief.\n\nUser: Who?\nAssistant:"
    raw = http.post("/generate", json={"prompt": prompt, "max_tokens": 20, "temperature": 0,
                                       "stop": ["\nUser:", "\nAssistant:"]}).json()
    assert msg.content == raw["text"] and r.choices[0].finish_reason == raw["finish_reason"]
    assert r.usage.prompt_tokens == raw["usage"]["prompt_tokens"]


def test_streamed_chat_opens_with_the_role_and_equals_the_whole_reply(client):
    kw = dict(model="tiny", messages=[{"role": "user", "content": "Speak."}], max_tokens=16, temperature=0.7, seed=2)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and chunks[-1].usage.completion_tokens >= 1


def test_an_image_in_the_last_message_is_answered_by_the_captioner(client, http):
    url, raw = png_data_url(1)
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    caption = http.post("/caption", files={"file": ("x.png", raw, "image/png")}, data={"max_tokens": "32"}).json()
    assert r.choices[0].message.content == caption["caption"] and r.model == caption["model"]
    # earlier in a conversation, the image reaches the text model as its caption: the prompt's
    # length says so (the tiny model reads one token a character, in a context of 64)
    prompt = f"User: [image: {caption['caption']}]\nUser: Go on.\nAssistant:"
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]},
                {"role": "user", "content": "Go on."}]
    if len(prompt) < 63:
        later = client.chat.completions.create(model="tiny", max_tokens=1, temperature=0, messages=messages)
        assert later.model == "tiny" and later.usage.prompt_tokens == len(prompt)
    else:
        with pytest.raises(openai.BadRequestError, match=f"prompt \\({len(prompt)} tokens\\)"):
            client.chat.completions.create(model="tiny", max_tokens=1, temperature=0, messages=messages)


@pytest.mark.parametrize("kw, error, says", [
    (dict(tools=[{"type": "function", "function": {"name": "f"}}]), openai.UnprocessableEntityError, "tools"),
    (dict(messages=[{"role": "user", "content": [{"type": "image_url",
                                                  "image_url": {"url": "https://example.com/x.png"}}]}]),
     openai.BadRequestError, "data URL"),
    (dict(model="no-such-model"), openai.NotFoundError, "no-such-model"),
    (dict(frequency_penalty=0.5), openai.UnprocessableEntityError, "frequency_penalty"),
])
def test_chat_refusals_raise_the_clients_typed_errors(client, kw, error, says):
    args = dict(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4) | kw
    with pytest.raises(error, match=says) as info:
        client.chat.completions.create(**args)
    assert info.value.body["type"] and info.value.body["message"]


# ---- embeddings and images ------------------------------------------------------------------------

def test_embeddings_arrive_as_unit_vectors_in_base64_and_float(client, http):
    r = client.embeddings.create(model="tiny-clip", input=["a red heart", "a smiling face"])   # base64 on the wire
    v = np.array([d.embedding for d in r.data])
    ours = np.array([d["embedding"] for d in http.post("/embed", json={"input": ["a red heart", "a smiling face"]})
                     .json()["data"]])
    assert v.shape == ours.shape and np.allclose(v, ours, atol=1e-6)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4) and r.usage.prompt_tokens == 6
    plain = client.embeddings.create(model="tiny-clip", input="a red heart", encoding_format="float")
    assert np.allclose(plain.data[0].embedding, v[0], atol=1e-6)
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        client.embeddings.create(model="tiny-clip", input="x", dimensions=v.shape[1] + 1)


def test_images_generate_through_v1(client):
    r = client.images.generate(model="tiny-diffusion", prompt="a bat", n=1, size="16x16", response_format="b64_json",
                               extra_body={"steps": 2, "seed": 1})
    assert np.asarray(Image.open(io.BytesIO(base64.b64decode(r.data[0].b64_json)))).shape == (16, 16, 3)


# ---- audio ----------------------------------------------------------------------------------------

def test_speech_in_every_format_with_the_right_bytes(client):
    kw = dict(model="tts-starter", voice="joe", input="The weather is fine today.")
    wav = client.audio.speech.create(**kw, response_format="wav").content
    x, rate = sf.read(io.BytesIO(wav), dtype="float32")
    seconds = len(x) / rate
    assert seconds > 0.8 and np.abs(x).max() > 0.05
    pcm = client.audio.speech.create(**kw, response_format="pcm").content
    assert abs(len(pcm) / 2 / 24_000 - seconds) < 0.01           # headerless 16-bit at 24 kHz, as OpenAI's
    flac = client.audio.speech.create(**kw, response_format="flac").content
    assert flac[:4] == b"fLaC"
    mp3 = client.audio.speech.create(**kw, response_format="mp3").content
    assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0)
    assert client.audio.speech.create(**kw, response_format="opus").content[:4] == b"OggS"
    aac = client.audio.speech.create(**kw, response_format="aac").content
    assert aac[0] == 0xFF and aac[1] & 0xF0 == 0xF0                # an ADTS frame
    with pytest.raises(openai.UnprocessableEntityError, match="speed"):
        client.audio.speech.create(**kw, speed=4.0)
    with pytest.raises(openai.NotFoundError, match="joe"):           # the error names the voices there are
        client.audio.speech.create(model="tts-starter", voice="alloy", input="Hello.")


def test_transcriptions_in_every_response_format(client):
    said = "Please call me at nine in the morning."
    wav = client.audio.speech.create(model="tts-starter", voice="joe", input=said, response_format="wav").content
    f = ("speech.wav", wav, "audio/wav")
    plain = client.audio.transcriptions.create(model="asr-starter", file=f)
    assert plain.text and len(set(plain.text.lower().split()) & set(said.lower().rstrip(".").split())) >= 3
    assert client.audio.transcriptions.create(model="asr-starter", file=f, response_format="text").strip() == plain.text
    srt = client.audio.transcriptions.create(model="asr-starter", file=f, response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    vtt = client.audio.transcriptions.create(model="asr-starter", file=f, response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n00:00:00.")
    verbose = client.audio.transcriptions.create(model="asr-starter", file=f, response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.text == plain.text and verbose.duration > 1 and verbose.segments
    assert [w.word for w in verbose.words] == plain.text.split()
    assert all(0 <= w.start <= w.end <= verbose.duration + 0.05 for w in verbose.words)
    with pytest.raises(openai.BadRequestError, match="timestamp_granularities"):
        client.audio.transcriptions.create(model="asr-starter", file=f, timestamp_granularities=["word"])

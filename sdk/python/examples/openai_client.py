"""The official openai package against omniforge's /v1, unchanged but for base_url."""
import os

from openai import OpenAI

base = os.environ.get("OMNIFORGE_BASE_URL", "http://127.0.0.1:8000")
client = OpenAI(base_url=f"{base}/v1", api_key=os.environ.get("OMNIFORGE_API_KEY", "local"))
model = os.environ.get("OMNIFORGE_TEXT_MODEL", "text-starter")
print("models:", [m.id for m in client.models.list()])
chat = client.chat.completions.create(model=model, max_tokens=20, seed=1,
                                      messages=[{"role": "user", "content": "Hi!"}])
print("chat:", repr(chat.choices[0].message.content))
for chunk in client.completions.create(model=model, prompt="Once upon a time", max_tokens=30, stream=True, seed=2):
    print(chunk.choices[0].text, end="", flush=True)
print()

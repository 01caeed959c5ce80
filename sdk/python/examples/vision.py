"""Images: draw one from a prompt, caption it, and find what it is nearest to in the shared space."""

import numpy as np

from omniforge_sdk import Client

with Client() as client:
    image = client.images.generate(prompt="a red heart", n=1, steps=10, seed=3)[0]
    png = image.png
    print(f"drew {len(png):,} bytes of PNG (seed {image.seed})")
    print("caption:", client.caption(image=png).caption)
    labels = ["a red heart", "a smiling face", "a cat"]
    texts = np.array(client.embeddings.create(input=labels).vectors)
    picture = np.array(client.embeddings.create(image=png).vectors[0])
    for label, score in sorted(zip(labels, texts @ picture), key=lambda x: -x[1]):
        print(f"{score:+.3f}  {label}")

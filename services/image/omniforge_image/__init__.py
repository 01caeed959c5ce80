"""The image service: text-to-image generation and image embeddings."""

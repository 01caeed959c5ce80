"""The fusion service: one latent space for text and images, similarity and search."""

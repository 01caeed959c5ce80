"""The audio service: speech recognition and text-to-speech over gRPC."""

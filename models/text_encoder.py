"""CLIP text encoding that pads each batch only to its longest prompt.

CLIP's text transformer is causal and pools at the end-of-text token, so the tokens
after the longest prompt of a batch cannot change any output: cutting them is exact
and saves most of the work (prompts are ~10 tokens, the context is 77).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from text4vis.models.clip_loader import LoadedClip, Tokenizer


def move_text_tower(model: nn.Module, device: str | torch.device) -> torch.device:
    """Move every parameter and buffer of a CLIP model outside ``visual`` to ``device``.

    The visual tower is placed by the frame encoder (or not used at all when an engine
    runs it), so the text tower moves on its own rather than with ``model.to``.
    """
    target = torch.device(device)
    for name, child in model.named_children():
        if name != "visual":
            child.to(target)
    for name, param in list(model.named_parameters(recurse=False)):  # CLIP's own: positional_embedding, ...
        setattr(model, name, nn.Parameter(param.detach().to(target), requires_grad=param.requires_grad))
    for name, buffer in list(model.named_buffers(recurse=False)):  # the causal attn_mask
        setattr(model, name, buffer.to(target))
    return target


def text_device(model: nn.Module) -> torch.device:
    """Where the text tower lives (the first parameter outside ``visual``)."""
    for name, param in model.named_parameters():
        if not name.startswith("visual."):
            return param.device
    raise ValueError("this CLIP model has no text tower")


class TextEncoder:
    """Encode prompts into L2-normalized CLIP text embeddings; float32 on the CPU out.

    ``device`` moves the text tower there first (the server puts it on the GPU beside the
    visual encoder, so a large prompt ensemble is not encoded on the CPU); ``None`` leaves
    it where it is.
    """

    def __init__(self, clip: LoadedClip, batch_size: int = 128, device: str | torch.device | None = None) -> None:
        self.model: Any = clip.model  # open_clip CLIP: attributes are reached dynamically
        self.device = move_text_tower(clip.model, device) if device is not None else text_device(clip.model)
        self.tokenizer: Tokenizer = clip.tokenizer
        self.model_id = clip.model_id
        self.batch_size = batch_size
        self.trimmable = (
            hasattr(self.model, "token_embedding")
            and getattr(self.model, "attn_mask", None) is not None
            and getattr(self.model, "text_pool_type", "argmax") in ("argmax", "eos")
        )

    @property
    def context_length(self) -> int:
        return int(getattr(self.tokenizer, "context_length", 77))

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Tokens per prompt including start and end tokens, without truncation."""
        inner = getattr(self.tokenizer, "encode", None)
        if inner is None:
            return [int((t != 0).sum()) for t in self.tokenizer(list(prompts))]
        return [len(inner(p)) + 2 for p in prompts]

    @torch.inference_mode()
    def encode(
        self, prompts: Sequence[str], trim: bool = True, progress: Callable[[int, int], None] | None = None
    ) -> torch.Tensor:
        """Embeddings ``[len(prompts), D]``, normalized. ``trim=False`` pads every prompt to 77.
        ``progress(done, total)`` is called after each batch (long vocabularies say how far they are)."""
        if not prompts:
            raise ValueError("no prompts to encode")
        device = self.device
        tokens = self.tokenizer(list(prompts))
        if not (trim and self.trimmable):
            chunks = []
            for i in range(0, len(tokens), self.batch_size):
                chunks.append(self.model.encode_text(tokens[i : i + self.batch_size].to(device)).float())
                if progress is not None:
                    progress(min(i + self.batch_size, len(tokens)), len(tokens))
            return F.normalize(torch.cat(chunks), dim=-1).cpu()
        ends = self._pool_index(tokens)
        order = torch.argsort(ends, stable=True)  # similar lengths share a batch
        out = torch.empty(len(prompts), self.model.text_projection.shape[-1])
        for i in range(0, len(order), self.batch_size):
            idx = order[i : i + self.batch_size]
            length = int(ends[idx].max()) + 1
            out[idx] = self._encode_trimmed(tokens[idx, :length].to(device)).float().cpu()
            if progress is not None:
                progress(min(i + self.batch_size, len(order)), len(order))
        return F.normalize(out, dim=-1)

    def _pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "text_pool_type", "argmax") == "eos":
            is_eos: torch.Tensor = tokens == self.model.text_eos_id
            return is_eos.int().argmax(dim=-1)
        return tokens.argmax(dim=-1)

    def _encode_trimmed(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's ``CLIP.encode_text`` on a context cut to ``tokens.shape[1]``."""
        m = self.model
        n = tokens.shape[1]
        cast_dtype = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast_dtype)
        x = x + m.positional_embedding[:n].to(cast_dtype)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = text_global_pool(x, tokens, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        if isinstance(m.text_projection, nn.Linear):
            return m.text_projection(x)
        return x @ m.text_projection

from pathlib import Path

import torch

from tests.conftest import shared_path
from text4vis.models.clip_loader import ClipSource, LoadedClip, load_clip
from text4vis.models.prompts import DEFAULT_TEMPLATE, KINETICS_TEMPLATES, read_labels
from text4vis.models.text_encoder import TextEncoder, move_text_tower


def _prompts() -> list[str]:
    labels = read_labels(shared_path("labels", "kinetics_400_labels.csv"))[:60]
    return [t.format(label) for label in labels for t in (DEFAULT_TEMPLATE, KINETICS_TEMPLATES[3])]


def test_longest_padding_equals_77_padding(tiny_clip: LoadedClip) -> None:
    enc = TextEncoder(tiny_clip, batch_size=32)
    assert enc.trimmable
    prompts = _prompts()
    trimmed = enc.encode(prompts)
    padded = enc.encode(prompts, trim=False)
    assert trimmed.shape == (len(prompts), 64)
    assert (trimmed - padded).abs().max() <= 1e-5


def test_equals_open_clip_encode_text(tiny_clip: LoadedClip) -> None:
    prompts = ["a video of a person dancing.", "a", "a video of a person " + "very " * 20 + "long."]
    with torch.no_grad():
        ref = tiny_clip.model.encode_text(tiny_clip.tokenizer(prompts), normalize=True)
    torch.testing.assert_close(TextEncoder(tiny_clip).encode(prompts), ref, rtol=0, atol=1e-5)


def test_token_counts(tiny_clip: LoadedClip) -> None:
    enc = TextEncoder(tiny_clip)
    counts = enc.token_counts(["a", "a video of a person dancing.", "word " * 100])
    assert counts[0] == 3  # start, "a", end
    assert counts[2] > enc.context_length


def test_text_tower_moves_alone_and_encodes_where_it_is(tiny_clip: LoadedClip, tiny_clip_path: Path) -> None:
    """The visual tower may live elsewhere (a GPU, fp16): prompts go where the text tower is."""
    prompts = ["a video of a person dancing.", "a video of a person surfing."]
    ref = TextEncoder(tiny_clip).encode(prompts)
    clip = load_clip(ClipSource(arch=tiny_clip.arch, checkpoint=tiny_clip_path))  # ours to move
    clip.model.visual.to("meta")  # stands in for "cuda": any device but the text tower's
    enc = TextEncoder(clip)
    assert enc.device == torch.device("cpu")
    torch.testing.assert_close(enc.encode(prompts), ref, rtol=0, atol=0)

    move_text_tower(clip.model, "meta")
    placed = {name: p.device.type for name, p in [*clip.model.named_parameters(), *clip.model.named_buffers()]}
    assert {d for n, d in placed.items() if not n.startswith("visual.")} == {"meta"}
    assert TextEncoder(clip).device == torch.device("meta")
    assert "attn_mask" in placed  # buffers move too (the causal mask is one)

import pytest
import torch
import torch.nn.functional as F

from text4vis.engine.runtime.backends import FrameEncoder, TorchFrameEncoder
from text4vis.models.clip_loader import LoadedClip
from text4vis.models.preprocess import PreprocessConfig
from text4vis.models.preprocess_torch import normalize

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_contract_and_chunking(tiny_clip: LoadedClip) -> None:
    enc = TorchFrameEncoder(tiny_clip.model.visual, MEAN, STD, max_batch_size=3)
    assert isinstance(enc, FrameEncoder)
    x = torch.randint(0, 256, (7, 3, 224, 224), dtype=torch.uint8)
    out = enc.encode(x)
    with torch.no_grad():
        ref = tiny_clip.model.visual(normalize(x, PreprocessConfig.for_mode("clip", 224, MEAN, STD)))
    assert out.shape == (7, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    enc.warmup()
    assert enc.healthy()
    with pytest.raises(ValueError):
        enc.encode(torch.zeros(2, 224, 224, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        enc.encode(torch.zeros(2, 3, 224, 224))


def test_bf16_close_to_fp32(tiny_clip: LoadedClip) -> None:
    """bf16 keeps 8 bits of mantissa: embeddings agree in direction (cosine >= 0.99), not digits."""
    import copy

    x = torch.randint(0, 256, (4, 3, 224, 224), dtype=torch.uint8)
    fp32 = TorchFrameEncoder(copy.deepcopy(tiny_clip.model.visual), MEAN, STD).encode(x)
    bf16 = TorchFrameEncoder(copy.deepcopy(tiny_clip.model.visual), MEAN, STD, precision="bf16").encode(x)
    assert bf16.dtype == torch.float32
    assert F.cosine_similarity(fp32, bf16).min() >= 0.99


def test_rejects_unknown_precision(tiny_clip: LoadedClip) -> None:
    with pytest.raises(ValueError, match="precision"):
        TorchFrameEncoder(tiny_clip.model.visual, MEAN, STD, precision="int3")  # type: ignore[arg-type]

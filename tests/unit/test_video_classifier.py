import torch

from text4vis.models.clip_loader import LoadedClip
from text4vis.models.temporal import TransformerHead
from text4vis.models.video_classifier import LOGIT_SCALE, VideoClassifier, class_logits, video_embedding


def test_views_are_averaged_before_normalizing(tiny_clip: LoadedClip) -> None:
    torch.manual_seed(0)
    head = TransformerHead(64).eval()
    classifier = torch.nn.functional.normalize(torch.randn(5, 64), dim=-1)
    model = VideoClassifier(tiny_clip.model.visual, head, classifier).eval()
    pixels = torch.randn(2, 3, 4, 3, 224, 224)  # batch 2, 3 views, 4 frames
    with torch.no_grad():
        logits = model(pixels)
        for b in range(2):
            frames = tiny_clip.model.visual(pixels[b].flatten(0, 1)).view(3, 4, -1)
            pooled = head(frames)  # [views, D], not normalized
            expected = LOGIT_SCALE * torch.nn.functional.normalize(pooled.mean(0), dim=-1) @ classifier.T
            torch.testing.assert_close(logits[b].float(), expected, rtol=1e-5, atol=1e-4)
            torch.testing.assert_close(
                class_logits(video_embedding(head, frames), classifier).float(), expected, rtol=1e-5, atol=1e-4
            )
    assert not model.classifier.requires_grad
    assert "classifier" not in dict(model.named_parameters())

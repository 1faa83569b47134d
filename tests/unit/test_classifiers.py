import open_clip
import pytest
import torch

from text4vis.models.classifiers import random_normal_classifier, random_orthogonal_classifier, text_classifier
from text4vis.models.clip_loader import LoadedClip
from text4vis.models.prompts import KINETICS_TEMPLATES, clean_label
from text4vis.models.text_encoder import TextEncoder

LABELS = ["arm wrestling", "ApplyEyeMakeup", "dancing ballet", "riding a bike", "yoga"]


@pytest.mark.parametrize("clean", [False, True])
@pytest.mark.parametrize("templates", [["a video of a person {}."], list(KINETICS_TEMPLATES[:7])])
def test_text_classifier_equals_open_clip(tiny_clip: LoadedClip, templates: list[str], clean: bool) -> None:
    """By default labels go into the prompts as written (the reference: "ApplyEyeMakeup"); the
    clean-up is opt-in. open_clip's own zero-shot classifier is the independent computation."""
    ours = text_classifier(TextEncoder(tiny_clip), LABELS, templates, clean)
    ref = open_clip.build_zero_shot_classifier(
        tiny_clip.model,
        tiny_clip.tokenizer,
        [clean_label(x) for x in LABELS] if clean else LABELS,
        templates,
        num_classes_per_batch=2,
        device="cpu",
        use_tqdm=False,
    )
    assert ours.shape == (len(LABELS), 64)
    torch.testing.assert_close(ours, ref.T, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(LABELS)))


def test_ensemble_formula(tiny_clip: LoadedClip) -> None:
    enc = TextEncoder(tiny_clip)
    templates = ["a photo of {}.", "a video of {}."]
    per_template = [enc.encode([t.format(x) for x in LABELS]) for t in templates]
    mean = torch.stack(per_template).mean(0)
    expected = mean / mean.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(text_classifier(enc, LABELS, templates), expected, rtol=0, atol=1e-6)


def test_random_classifiers() -> None:
    w = random_orthogonal_classifier(10, 64, seed=3)
    torch.testing.assert_close(w @ w.T, torch.eye(10), rtol=0, atol=1e-5)
    torch.testing.assert_close(w, random_orthogonal_classifier(10, 64, seed=3))
    n = random_normal_classifier(100, 64)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(100))
    with pytest.raises(ValueError):
        random_orthogonal_classifier(65, 64)

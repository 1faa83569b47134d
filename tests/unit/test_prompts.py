from pathlib import Path

import pytest

from tests.conftest import shared_path
from text4vis.models.prompts import (
    DEFAULT_TEMPLATE,
    KINETICS_TEMPLATES,
    clean_label,
    format_prompts,
    read_labels,
    read_templates,
    validate_template,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("ApplyEyeMakeup", "apply eye makeup"),
        ("YoYo", "yo yo"),
        ("brush_hair", "brush hair"),
        ("ride_bike", "ride bike"),
        ("arm wrestling", "arm wrestling"),
        ("Eiffel Tower", "Eiffel Tower"),
        ("skiing (not slalom or crosscountry)", "skiing (not slalom or crosscountry)"),
        ("  extra   spaces ", "extra spaces"),
        ("abseiling", "abseiling"),
        ("HandstandPushups", "handstand pushups"),
    ],
)
def test_clean_label(raw: str, clean: str) -> None:
    assert clean_label(raw) == clean


def test_kinetics_templates_are_clips_28() -> None:
    lines = shared_path("labels", "kinetics_templates.txt").read_text().splitlines()
    assert list(KINETICS_TEMPLATES) == lines
    assert len(KINETICS_TEMPLATES) == 28


def test_labels_are_prompted_as_written_unless_clean_up_is_asked() -> None:
    """The reference's prompt is the label list's text ("ApplyLipstick"); clean-up is opt-in."""
    assert format_prompts("ApplyLipstick", [DEFAULT_TEMPLATE]) == ["a video of a person ApplyLipstick."]
    assert format_prompts("brush_hair", ["{}"]) == ["brush_hair"]
    assert format_prompts("ApplyLipstick", [DEFAULT_TEMPLATE], clean=True) == ["a video of a person apply lipstick."]


@pytest.mark.parametrize("bad", ["no placeholder", "{} and {}", "{label}", "{0}", "{"])
def test_validate_template_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_template(bad)


def test_read_labels_csv_and_txt(tmp_path: Path) -> None:
    kinetics = read_labels(shared_path("labels", "kinetics_400_labels.csv"))
    assert len(kinetics) == 400 and kinetics[:2] == ["abseiling", "air drumming"]
    assert len(read_labels(shared_path("labels", "ucf_labels.csv"))) == 101
    txt = tmp_path / "labels.txt"
    txt.write_text("a\n\n b \n")
    assert read_labels(txt) == ["a", "b"]


def test_read_templates(tmp_path: Path) -> None:
    assert len(read_templates(shared_path("labels", "ucf101_templates.txt"))) == 48
    bad = tmp_path / "t.txt"
    bad.write_text("a photo of {}.\nno placeholder\n")
    with pytest.raises(ValueError, match="no placeholder"):
        read_templates(bad)

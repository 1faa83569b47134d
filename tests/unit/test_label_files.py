"""One label file format, parsed by the same rules in ``t4v`` (models/prompts.py) and
``t4v-client`` (clients/t4v_client/labels.py): the same labels, or the same refusal."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from t4v_client.labels import read_labels as client_read
from text4vis.models.prompts import read_labels as server_read

GOOD = {
    "a.txt": ("yoga\n\n  surfing \nApplyEyeMakeup\n", ["yoga", "surfing", "ApplyEyeMakeup"]),
    "b.csv": ("id,name\n0,brush hair\n1,cartwheel\n", ["brush hair", "cartwheel"]),
    "c.csv": ('name,notes\nyoga,calm\n"surfing, big waves",wet\n', ["yoga", "surfing, big waves"]),
    "d.json": ('["a", " b "]', ["a", "b"]),
}
BAD = {
    "e.txt": ('["a", "b"]\n', "looks like a JSON array"),
    "f.txt": ("a;b;c\n", "one line with separators"),
    "g.csv": ("class_id,class_name\n0,yoga\n", "needs a header with a name column"),
    "h.csv": ("0,yoga\n1,surfing\n", "needs a header with a name column"),
    "i.json": ('{"labels": ["a"]}', "an array of strings"),
    "j.yaml": ("- a\n- b\n", r"label files are \.txt \(one label per line\), \.csv"),
}


@pytest.mark.parametrize("read", [server_read, client_read], ids=["t4v", "t4v-client"])
def test_label_files(tmp_path: Path, read) -> None:  # noqa: ANN001
    for name, (text, labels) in GOOD.items():
        (tmp_path / name).write_text(text)
        assert read(tmp_path / name) == labels, name
    for name, (text, message) in BAD.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read(tmp_path / name)


def test_shared_label_lists_parse() -> None:
    from tests.conftest import shared_path

    ucf = server_read(shared_path("labels", "ucf_labels.csv"))
    assert len(ucf) == 101 and ucf == client_read(shared_path("labels", "ucf_labels.csv"))


@pytest.mark.parametrize("read", [server_read, client_read], ids=["t4v", "t4v-client"])
def test_comment_lines_are_skipped_and_a_header_line_warns(tmp_path: Path, read) -> None:  # noqa: ANN001
    """``# my classes`` was classified as a class; a first line ``name`` is probably a header."""
    commented = tmp_path / "c.txt"
    commented.write_text("# my classes\nyoga\n  # a note\nsurfing\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for a file without a header
        assert read(commented) == ["yoga", "surfing"]
    headed = tmp_path / "h.txt"
    headed.write_text("Label\nyoga\nsurfing\n")
    with pytest.warns(UserWarning, match=r"the first line 'Label' looks like a header"):
        assert read(headed) == ["Label", "yoga", "surfing"]

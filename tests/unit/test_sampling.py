import numpy as np
import pytest

from text4vis.engine.request import parse_views, sample_indices


def reference_indices(n_frames: int, t: int, clips: int) -> list[list[int]]:
    """The DESIGN.md formulas written out independently, with plain Python."""
    tick = n_frames / t
    if clips == 1:
        return [[int(tick * x) for x in range(t)]]
    starts = np.linspace(0, tick - 1, clips).astype(int)
    return [[int(s + tick * x) % n_frames for x in range(t)] for s in starts]


@pytest.mark.parametrize(
    ("n", "t", "clips", "expected"),
    [
        (300, 8, 1, [[0, 37, 75, 112, 150, 187, 225, 262]]),
        (280, 8, 1, [[0, 35, 70, 105, 140, 175, 210, 245]]),
        (10, 8, 1, [[0, 1, 2, 3, 5, 6, 7, 8]]),
        (3, 8, 1, [[0, 0, 0, 1, 1, 1, 2, 2]]),
        (1, 8, 1, [[0] * 8]),
        (
            164,
            8,
            4,
            [
                [0, 20, 41, 61, 82, 102, 123, 143],
                [6, 26, 47, 67, 88, 108, 129, 149],
                [13, 33, 54, 74, 95, 115, 136, 156],
                [19, 39, 60, 80, 101, 121, 142, 162],
            ],
        ),
    ],
)
def test_known_indices(n: int, t: int, clips: int, expected: list[list[int]]) -> None:
    assert sample_indices(n, t, clips).tolist() == expected


@pytest.mark.parametrize("n", [8, 9, 16, 31, 100, 164, 280, 300, 1001, 24 * 3600])
@pytest.mark.parametrize("t", [8, 16, 32])
@pytest.mark.parametrize("clips", [1, 2, 4])
def test_matches_design_formula(n: int, t: int, clips: int) -> None:
    got = sample_indices(n, t, clips)
    assert got.shape == (clips, t)
    assert got.tolist() == reference_indices(n, t, clips)
    assert got.min() >= 0 and got.max() < n


def test_short_video_multi_clip_starts_truncate_to_zero() -> None:
    # tick - 1 < 0: the starts are cast to int (toward zero), as the reference did with NumPy 1.x
    assert sample_indices(4, 8, 2).tolist() == [[0, 0, 1, 1, 2, 2, 3, 3]] * 2


def test_rejects_empty_video() -> None:
    with pytest.raises(ValueError):
        sample_indices(0, 8)


@pytest.mark.parametrize(("text", "views"), [("1x1", (1, 1)), ("4x3", (4, 3)), ("2X1", (2, 1))])
def test_parse_views(text: str, views: tuple[int, int]) -> None:
    assert parse_views(text) == views


@pytest.mark.parametrize("text", ["4", "4x2", "0x1", "axb", "4x3x1", ""])
def test_parse_views_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_views(text)


@pytest.mark.parametrize(
    ("n", "t", "keys"),
    [
        (300, 8, list(range(0, 300, 60))),
        (300, 8, list(range(0, 300, 12))),
        (300, 16, [0]),
        (1800, 8, list(range(0, 1800, 60))),
        (40, 8, None),
        (8, 8, [0, 4]),
    ],
)
def test_fast_sampling_takes_one_cheap_frame_inside_each_segment(n: int, t: int, keys: list[int] | None) -> None:
    from text4vis.models.sampling import fast_indices

    chosen = fast_indices(n, t, keys)
    assert len(chosen) == len(set(chosen)) == t and chosen == sorted(chosen)
    for k, i in enumerate(chosen):
        start, end = n * k // t, n * (k + 1) // t
        assert start <= i < end  # a frame TSN training could have drawn for segment k
        inside = [key for key in keys or [] if start <= key < end]
        assert i == (inside[0] if inside else start)  # the keyframe, else the segment's first frame


def test_fast_sampling_of_a_video_shorter_than_t_repeats_frames() -> None:
    from text4vis.models.sampling import fast_indices

    assert fast_indices(3, 8, [0]) == sample_indices(3, 8).reshape(-1).tolist()

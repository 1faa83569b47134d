"""Built-in label sets, loadable by name."""

from __future__ import annotations

from collections.abc import Callable


def _kinetics400() -> list[str]:
    from torchvision.models.video import R3D_18_Weights

    return list(R3D_18_Weights.DEFAULT.meta["categories"])


LABEL_PRESETS: dict[str, Callable[[], list[str]]] = {"kinetics400": _kinetics400}


def preset_labels(name: str) -> list[str]:
    """The labels of the preset ``name``; KeyError names the known presets."""
    try:
        return LABEL_PRESETS[name]()
    except KeyError:
        raise KeyError(f"unknown label preset {name!r}; known: {', '.join(LABEL_PRESETS)}") from None

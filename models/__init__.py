"""Pure PyTorch side of text4vis-serve: CLIP loading, temporal heads, classifiers.

Nothing here imports ``engine`` or ``server``.
"""

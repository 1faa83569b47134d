"""Fine-tuning the visual encoder against a frozen text classifier (the Text4Vis recipe).

Imports ``models`` only; never ``engine`` or ``server``.
"""

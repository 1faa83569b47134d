"""The classify flow: decode workers -> the dynamic batcher -> temporal head and scoring, with
admission in front (``service.py`` owns the stages; ``admission.py`` decides who may enter)."""

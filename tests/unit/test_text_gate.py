"""The text encoder's share and admission (``engine/vocab/text_gate.py``): a few prompts asked
for while thousands encode wait for one chunk, not for all of them; prompts that would wait past
the server's max_queue_wait_s are refused at once; the embeddings are the encoder's own."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import torch

from text4vis.engine.errors import Overloaded
from text4vis.engine.vocab.text_gate import CHUNK, TextGate


class SlowEncoder:
    """Stands in for the text encoder: 1 ms per prompt, each prompt's embedding its length."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        time.sleep(0.001 * len(prompts))
        self.calls.append((prompts[0].split()[0], len(prompts)))
        return torch.tensor([[float(len(p))] for p in prompts])


def test_a_small_request_waits_one_chunk_not_the_whole_large_one() -> None:
    gate, encoder = TextGate(), SlowEncoder()
    big = [f"big {i}" for i in range(CHUNK * 12)]
    done: dict[str, float] = {}

    def run(name: str, prompts: list[str]) -> None:
        out = gate.encode(encoder, prompts)  # type: ignore[arg-type]
        assert out[:, 0].tolist() == [float(len(p)) for p in prompts]
        done[name] = time.monotonic()

    t0 = time.monotonic()
    large = threading.Thread(target=run, args=("big", big))
    large.start()
    time.sleep(0.05)  # the large one holds the encoder
    run("small", ["small one", "small two"])
    large.join()
    assert done["small"] < done["big"]
    turns = [name for name, _ in encoder.calls]
    assert turns.index("small") <= 3, turns  # its turn came after at most the chunks already begun
    assert done["small"] - t0 < 0.5 * (done["big"] - t0)


def test_prompts_that_would_wait_too_long_are_refused_and_leave_no_count() -> None:
    gate, encoder = TextGate(max_wait_s=0.2), SlowEncoder()
    gate.encode(encoder, [f"warm {i}" for i in range(CHUNK)])  # type: ignore[arg-type]  # measures the rate
    assert gate.seconds_per_prompt is not None and gate.queued == 0
    started = threading.Event()

    def large() -> None:
        started.set()
        gate.encode(encoder, [f"big {i}" for i in range(CHUNK * 4)])  # type: ignore[arg-type]  # about 1 s

    thread = threading.Thread(target=large)
    thread.start()
    started.wait()
    time.sleep(0.02)
    with pytest.raises(Overloaded) as refused:
        gate.encode(encoder, ["one more"])  # type: ignore[arg-type]
    assert "max_queue_wait_s" in str(refused.value) and refused.value.retry_after_s >= 1
    thread.join()
    assert gate.queued == 0
    assert gate.encode(encoder, ["now"])[0, 0] == 3.0  # type: ignore[arg-type]

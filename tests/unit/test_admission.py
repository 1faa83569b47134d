"""Admission by predicted wait, on its own (no server): the arithmetic, the caps, Retry-After."""

from __future__ import annotations

import pytest

from text4vis.engine.errors import Overloaded
from text4vis.engine.flow.admission import Admission


def test_a_cold_server_admits_up_to_the_hard_cap() -> None:
    admission = Admission(workers=2, max_wait_s=10.0, max_in_flight=3)
    with admission.admit(), admission.admit(), admission.admit():
        assert admission.predicted_wait_s() is None and admission.in_flight == 3
        with pytest.raises(Overloaded, match="3 classify requests are in progress") as refused:
            admission.check()
        assert refused.value.retry_after_s == 1
    assert admission.in_flight == 0


def test_refuses_when_the_predicted_wait_passes_the_limit_with_retry_after_the_wait() -> None:
    """2 workers, 0.5 s a file: 40 requests past their upload are 10 s of decoding ahead."""
    admission = Admission(workers=2, max_wait_s=10.0, max_in_flight=1000)
    admission.estimates.decoded(0.5, 0.0, False)
    admission.estimates.encoded(0.0, 64)
    tickets = []
    for _ in range(40):
        cm = admission.admit()
        tickets.append(cm)
        cm.__enter__().uploaded()
    assert admission.predicted_wait_s() == pytest.approx(10.0)
    admission.check()  # exactly at the limit: admitted
    cm = admission.admit()
    cm.__enter__().uploaded()
    with pytest.raises(Overloaded, match="about 10.2 s to start on") as refused:
        admission.check()
    assert refused.value.retry_after_s == 11  # the predicted wait, rounded up
    cm.__exit__(None, None, None)
    for cm in tickets:
        cm.__exit__(None, None, None)
    assert admission.in_flight == 0 and admission.predicted_wait_s() == 0.0


def test_uploads_still_arriving_count_as_work_to_come() -> None:
    """In a burst every request is admitted while its body streams in: they must count, or the
    whole burst would be admitted before any reached a decoder."""
    admission = Admission(workers=1, max_wait_s=2.0, max_in_flight=100)
    admission.estimates.decoded(1.0, 0.0, False)
    held = [admission.admit() for _ in range(3)]
    for cm in held:
        cm.__enter__()  # uploading
    assert admission.uploading == 3 and admission.working == 0 and admission.predicted_wait_s() == 3.0
    with pytest.raises(Overloaded):
        admission.check()
    for cm in held:
        cm.__exit__(None, None, None)
    assert admission.uploading == 0


def test_the_encoder_backlog_counts_when_it_is_the_slower_stage() -> None:
    admission = Admission(workers=4, max_wait_s=5.0, max_in_flight=100)
    admission.estimates.decoded(0.01, 0.0, False)
    admission.estimates.encoded(0.8, 8)  # 0.1 s a frame
    admission.estimates.requested(8)
    with admission.admit() as a, admission.admit() as b:
        a.uploaded()
        b.uploaded()
        assert admission.predicted_wait_s() == pytest.approx(2 * 8 * 0.1)


def test_estimates_are_running_means() -> None:
    admission = Admission(workers=1, max_wait_s=1.0, max_in_flight=10)
    admission.estimates.decoded(1.0, 10.0, False)
    admission.estimates.decoded(2.0, 10.5, False)
    assert admission.estimates.decode_s_per_file == pytest.approx(1.2)
    assert admission.estimates.decode_interval_s is None  # never saturated: the busy time stands in


def test_once_saturated_the_rate_of_finishes_predicts_the_wait() -> None:
    """2 workers that each take 0.2 s of work but finish one every 0.3 s (handoffs, a shared CPU):
    the wait follows the 0.3 s actually seen, not 0.2 / 2."""
    admission = Admission(workers=2, max_wait_s=10.0, max_in_flight=100)
    for k in range(40):
        admission.estimates.decoded(0.2, 100.0 + 0.3 * k, saturated=True)
    with admission.admit() as a, admission.admit() as b:
        a.uploaded()
        b.uploaded()
        assert admission.predicted_wait_s() == pytest.approx(2 * 0.3)


def test_a_stalled_upload_holds_no_slot_and_stalled_ones_are_capped_apart() -> None:
    """Clients that send a header and then a byte every few seconds (issue 25): while silent they
    leave the prediction and the cap, so they cannot refuse every other request; they are capped
    apart, and the upload deadline (server/uploads.py) ends them."""
    now = [0.0]
    admission = Admission(workers=2, max_wait_s=10.0, max_in_flight=4, clock=lambda: now[0])
    held = [admission.admit() for _ in range(4)]
    tickets = [cm.__enter__() for cm in held]
    with pytest.raises(Overloaded, match="4 classify requests are in progress"):
        admission.check()  # four live uploads fill the cap
    now[0] = 3.0  # silent for 3 s: stalled
    assert admission.stalled == 4 and admission.in_flight == 0
    admission.check()  # room for others
    more = []
    for _ in range(3):  # four more at a time, each four then silent
        for _ in range(4):
            more.append(admission.admit())
            more[-1].__enter__()
        now[0] += 3.0
    with pytest.raises(Overloaded, match="16 uploads to this server have stalled"):
        admission.check()  # capped apart, at 4 x the cap
    for cm in more:
        cm.__exit__(None, None, None)
    tickets[0].progress()  # a byte arrives: live again
    assert admission.stalled == 3 and admission.in_flight == 1
    with admission.admit() as other:
        other.uploaded()
        assert admission.working == 1 and admission.in_flight == 2
    for cm in held:
        cm.__exit__(None, None, None)
    assert admission.uploading == 0 and admission.stalled == 0


def test_an_upload_too_slow_to_finish_in_time_holds_no_slot() -> None:
    """A client trickling a byte a second is never silent for 2 s, so it stayed live, in the
    prediction and the cap (70 of them made every other request a 503). Once its rate says the
    rest of its Content-Length cannot arrive before its deadline, it counts as stalled; an upload
    on a slow but sufficient link stays live."""
    now = [0.0]
    admission = Admission(workers=2, max_wait_s=10.0, max_in_flight=2, clock=lambda: now[0])
    with admission.admit() as trickle, admission.admit() as slow_but_fine:
        trickle.expect(100_000, 60.0)
        slow_but_fine.expect(100_000, 60.0)
        with pytest.raises(Overloaded, match="2 classify requests are in progress"):
            admission.check()
        for second in range(1, 4):
            now[0] = float(second)
            trickle.progress(second)  # 1 B/s: 100 kB would take a day
            slow_but_fine.progress(3_000 * second)  # 3 kB/s: whole in 33 s, within its 60
        assert trickle.doomed(now[0]) and not slow_but_fine.doomed(now[0])
        assert admission.stalled == 1 and admission.in_flight == 1
        admission.check()  # room for a request that will finish
        unknown = admission.admit()
        ticket = unknown.__enter__()  # no Content-Length: judged by its silences only
        now[0] += 1.0
        ticket.progress(10)
        assert not ticket.doomed(now[0])
        unknown.__exit__(None, None, None)

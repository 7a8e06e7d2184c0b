"""An epoch's calls (`spec_impl.trainer.calls`): the one schedule that the fit loop,
`Trainer.evaluate` and the benchmark runner read."""

from hypothesis import given
from hypothesis import strategies as st

from spec_impl.trainer import Call, schedule
from spec_impl.trainer.calls import next_call


def test_an_epoch_of_ten_steps_at_four_per_call():
    assert list(schedule(10, 4)) == [Call(0, 4), Call(4, 4), Call(8, 2)]


def test_full_batches_go_through_the_group_and_the_rest_one_call():
    # 10 steps, the last batch partial (9 full): two groups of 4, then 2 steps unstacked
    assert list(schedule(10, 4, full=9)) == [Call(0, 4, True), Call(4, 4, True), Call(8, 2)]
    # one step per call is never a group
    assert not any(call.grouped for call in schedule(5, 1, full=5))


def test_a_resumed_epoch_starts_at_its_step():
    assert list(schedule(10, 4, start=6)) == [Call(6, 4)]


def test_an_epoch_of_unknown_length_asks_for_k_steps():
    assert next_call(12, None, 8) == Call(12, 8)


@given(steps=st.integers(0, 200), k=st.integers(1, 40), start=st.integers(0, 200),
       last_partial=st.booleans())
def test_the_calls_cover_the_epoch_once_in_order(steps, k, start, last_partial):
    start = min(start, steps)
    full = max(steps - int(last_partial), 0)
    calls = list(schedule(steps, k, full=full, start=start))
    covered = [s for call in calls for s in range(call.start, call.start + call.steps)]
    assert covered == list(range(start, steps))
    assert all(1 <= call.steps <= k for call in calls)
    # a group is k full batches: never a partial one, never past the epoch
    assert all(call.steps == k and call.start + k <= full for call in calls if call.grouped)

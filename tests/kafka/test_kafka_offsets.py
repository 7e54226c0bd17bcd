"""The contiguous-commit tracker on its own: no broker needed."""

from __future__ import annotations

from msgkit_kafka.offsets import OffsetTracker, PartitionOffsets


def _part(*offsets: int) -> PartitionOffsets:
    part = PartitionOffsets(("t", 0))
    part.pending.extend(offsets)
    return part


def test_in_order_finishes_move_the_position() -> None:
    part = _part(10, 11, 12)
    part.finish(10)
    assert part.position == 11
    part.finish(11)
    part.finish(12)
    assert part.position == 13 and not part.pending and not part.finished


def test_a_slow_message_holds_back_later_ones() -> None:
    part = _part(10, 11, 12)
    part.finish(11)
    part.finish(12)
    assert part.position is None, "11 and 12 must not be committed while 10 runs"
    part.finish(10)
    assert part.position == 13 and not part.finished


def test_gap_in_the_middle() -> None:
    part = _part(10, 11, 12, 13)
    part.finish(10)
    part.finish(12)
    part.finish(13)
    assert part.position == 11
    part.finish(11)
    assert part.position == 14


def test_offsets_with_gaps_commit_after_the_last_finished() -> None:
    part = _part(5, 9, 20)  # compaction or transaction markers leave holes
    part.finish(9)
    part.finish(5)
    assert part.position == 10
    part.finish(20)
    assert part.position == 21


def test_take_returns_each_moved_position_once() -> None:
    tracker = OffsetTracker()
    [a, b] = tracker.assign([("t", 0), ("t", 1)])
    a.pending.extend([0, 1])
    b.pending.extend([0])
    a.finish(0)
    assert tracker.take() == [(("t", 0), 1)]
    assert tracker.take() == []
    a.finish(1)
    b.finish(0)
    assert sorted(tracker.take()) == [(("t", 0), 2), (("t", 1), 1)]


def test_failed_commits_are_taken_again() -> None:
    tracker = OffsetTracker()
    [part] = tracker.assign([("t", 0)])
    part.pending.append(7)
    part.finish(7)
    taken = tracker.take()
    assert taken == [(("t", 0), 8)]
    tracker.commit_failed(taken)
    assert tracker.take() == [(("t", 0), 8)]


def test_revoke_returns_uncommitted_positions_and_ignores_late_acks() -> None:
    tracker = OffsetTracker()
    [part] = tracker.assign([("t", 0)])
    part.pending.extend([0, 1, 2])
    part.finish(0)
    assert tracker.revoke([("t", 0)]) == [(("t", 0), 1)]
    part.finish(1)  # a late ack from before the rebalance
    assert part.position == 1 and tracker.take() == []
    [again] = tracker.assign([("t", 0)])
    assert again is not part and again.position is None


def test_reassignment_replaces_the_old_generation() -> None:
    tracker = OffsetTracker()
    [old] = tracker.assign([("t", 0)])
    [new] = tracker.assign([("t", 0)])
    assert old.revoked and not new.revoked
    assert tracker.parts[("t", 0)] is new


def test_position_stored_at_assignment_is_not_committed_again() -> None:
    tracker = OffsetTracker()
    [part] = tracker.assign([("t", 0)])
    tracker.mark_committed(("t", 0), 42)
    assert tracker.take() == []
    part.pending.append(42)
    part.finish(42)
    assert tracker.take() == [(("t", 0), 43)]

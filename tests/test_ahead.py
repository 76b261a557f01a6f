"""The local queue's target size: fixed, or adapting to how long jobs run."""

from __future__ import annotations

import pytest

from graphile_worker._ahead import AUTO_MAX, AUTO_TTL, WINDOW, ClaimAhead


def test_a_fixed_size_stays_put_whatever_jobs_take() -> None:
    ahead = ClaimAhead(40, concurrency=10, ttl=300.0)
    ahead.observe(30.0)

    assert ahead.size() == 40
    assert ahead.enabled
    assert ahead.ttl == 300.0


def test_size_zero_turns_the_local_queue_off() -> None:
    ahead = ClaimAhead(0, concurrency=10, ttl=300.0)
    ahead.observe(0.0001)

    assert ahead.size() == 0
    assert not ahead.enabled


def test_auto_claims_nothing_ahead_before_a_job_has_run() -> None:
    assert ClaimAhead("auto", concurrency=10, ttl=300.0).size() == 0


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        # 10 runners finishing a 1 ms job each: 10,000 jobs/s, so 20 ms of work
        # is 200 jobs.
        (0.001, 200),
        # 4 ms jobs: 2,500 jobs/s, 50 jobs in 20 ms.
        (0.004, 50),
        # 100 ms jobs: 100 jobs/s, 2 jobs in 20 ms.
        (0.1, 2),
        # A job of a second or more: under one job's worth, nothing ahead.
        (1.0, 0),
        (60.0, 0),
        # A no-op job: the cap.
        (0.000001, AUTO_MAX),
        (0.0, AUTO_MAX),
    ],
)
def test_auto_keeps_about_a_window_of_work_claimed(
    seconds: float, expected: int
) -> None:
    ahead = ClaimAhead("auto", concurrency=10, ttl=300.0)
    ahead.observe(seconds)

    assert WINDOW == 0.02
    assert ahead.size() == expected


def test_auto_follows_jobs_that_turn_slow() -> None:
    ahead = ClaimAhead("auto", concurrency=10, ttl=300.0)
    for _ in range(100):
        ahead.observe(0.00001)

    assert ahead.size() == AUTO_MAX

    for _ in range(200):
        ahead.observe(2.0)

    assert ahead.size() == 0


def test_auto_gives_claimed_jobs_back_within_a_second() -> None:
    assert ClaimAhead("auto", concurrency=1, ttl=300.0).ttl == AUTO_TTL == 1.0
    assert ClaimAhead("auto", concurrency=1, ttl=0.2).ttl == 0.2

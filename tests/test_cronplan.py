"""The cron scheduler's restart backoff, as a pure function.

graphile-worker 0.18 restarts its cron after an error no sooner than 200 ms
and no later than a minute (with jitter) however many attempts came before;
ours must stay within that minute too, as the scheduler calls it from the
handler of the error it is restarting after.
"""

from __future__ import annotations

import pytest

from graphile_worker._cronplan import restart_delay

LONGEST = 60.0  # seconds: the most any restart may wait
FIRST = 0.2  # seconds: the most the first restart may wait


def test_the_first_restart_is_quick_and_none_waits_over_a_minute() -> None:
    assert 0 < restart_delay(1) <= FIRST
    for failures in range(1, 1001):
        assert 0 < restart_delay(failures) <= LONGEST, failures


@pytest.mark.parametrize("failures", [1760, 10_000, 1_000_000])
def test_the_restart_delay_stays_capped_after_many_failures(failures: int) -> None:
    assert 0 < restart_delay(failures) <= LONGEST

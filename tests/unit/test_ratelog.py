"""RateLimitedLog: the first occurrence in full, repeats summarised with their count, one line on recovery."""

import logging

from ggdefender.ratelog import RateLimitedLog


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _lines(caplog):
    return [r.getMessage() for r in caplog.records]


def test_first_logged_repeats_summarised_then_recovered(caplog):
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), every=300, clock=clock)
    with caplog.at_level(logging.INFO, logger="t.ratelog"):
        assert rl.failed("p", "plugin %r failed: %s", "p", "boom")
        for i in range(99):
            clock.t += 1
            assert not rl.failed("p", "plugin %r failed: %s", "p", f"boom {i}")
        clock.t = 301
        assert rl.failed("p", "plugin %r failed: %s", "p", "boom last")
        clock.t = 400
        assert rl.recovered("p", "plugin %r: sampling again", "p")
        assert not rl.recovered("p", "plugin %r: sampling again", "p")  # only once
    first, summary, recovered = _lines(caplog)
    assert first == "plugin 'p' failed: boom"
    assert summary.startswith("plugin 'p' failed: boom last (still failing: 100 time(s) in the last 301 s, "
                              "101 in all over 301 s)")
    assert recovered == "plugin 'p': sampling again (after 101 failure(s) over 400 s)"
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING, logging.INFO]


def test_keys_are_independent_and_bounded(caplog):
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger("t.ratelog"), every=300, clock=clock, max_keys=4)
    with caplog.at_level(logging.WARNING, logger="t.ratelog"):
        for i in range(10):
            clock.t += 1
            rl.failed(f"k{i}", "problem %d", i)
        assert len(rl._active) == 4
        assert not rl.failed("k9", "problem again")   # still known: summarised, not repeated
    assert len(caplog.records) == 10

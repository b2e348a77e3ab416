"""The collector closes detect and the plugin host on every way out of run(), so detect's statistics history
recorded since its last periodic save is written (issue 10, item 10)."""

import threading

import pytest

from ggdefender.collector.service import CollectorService
from ggdefender.ipc import IpcUnavailable

from test_service import CONF, FakeIpc


class Part:
    def __init__(self):
        self.closed = 0

    def close(self):
        self.closed += 1


def _svc(tmp_path, source, ipc):
    svc = CollectorService(ipc, "thing1", str(tmp_path), source=source("basic"))
    svc.apply_config(ipc.config)
    svc.detect, svc.plugins = Part(), Part()
    return svc


def test_a_stop_closes_detect_and_plugins(tmp_path, source):
    ipc = FakeIpc(dict(CONF))
    svc = _svc(tmp_path, source, ipc)
    detect, plugins = svc.detect, svc.plugins
    svc.apply_config = lambda whole: None  # keep the fakes in place
    stop = threading.Event()
    stop.set()
    svc.run(stop)
    assert detect.closed == 1 and plugins.closed == 1


def test_a_failure_at_start_up_still_closes_detect(tmp_path, source):
    ipc = FakeIpc(dict(CONF))
    svc = _svc(tmp_path, source, ipc)
    detect = svc.detect

    def gone(*_a, **_k):
        raise IpcUnavailable("relay to the supervisor lost")

    ipc.get_config = gone
    with pytest.raises(IpcUnavailable):
        svc.run(threading.Event())
    assert detect.closed == 1


def test_a_failing_detect_close_does_not_stop_the_rest(tmp_path, source, caplog):
    ipc = FakeIpc(dict(CONF))
    svc = _svc(tmp_path, source, ipc)

    class Broken:
        def close(self):
            raise OSError("disk full")

    svc.detect = Broken()
    svc.close()
    assert "on-device detect close failed" in caplog.text and svc.plugins.closed == 1

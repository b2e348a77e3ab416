"""Process B's host closes detect and the plugin host on every way out of run(), so detect's statistics history
recorded since its last periodic save is written (issue 10, item 10)."""

import threading

import pytest

from ggdefender.ipc import IpcUnavailable

from test_service import CONF, make_process


class Part:
    def __init__(self, section):
        self.section = section
        self.closed = 0

    def start(self):
        pass

    def reconfigure(self, section):
        pass

    def close(self):
        self.closed += 1


def _proc(tmp_path, source):
    ipc, proc = make_process(tmp_path, source, CONF)
    proc.detect.close()  # the real ones are replaced by fakes that count
    proc.plugins.close()
    proc.detect, proc.plugins = Part("Detect"), Part("Plugins")
    proc.parts[:2] = [proc.detect, proc.plugins]
    return ipc, proc


def test_a_stop_closes_detect_and_plugins(tmp_path, source):
    ipc, proc = _proc(tmp_path, source)
    detect, plugins = proc.detect, proc.plugins
    stop = threading.Event()
    stop.set()
    proc.run(stop)
    assert detect.closed == 1 and plugins.closed == 1


def test_a_failure_at_start_up_still_closes_detect(tmp_path, source):
    ipc, proc = _proc(tmp_path, source)
    detect = proc.detect

    def gone(*_a, **_k):
        raise IpcUnavailable("relay to the supervisor lost")

    ipc.get_config = gone
    with pytest.raises(IpcUnavailable):
        proc.run(threading.Event())
    assert detect.closed == 1


def test_a_failing_detect_close_does_not_stop_the_rest(tmp_path, source, caplog):
    ipc, proc = _proc(tmp_path, source)

    class Broken(Part):
        def close(self):
            raise OSError("disk full")

    proc.parts[0] = Broken("Detect")
    proc.close()
    assert "closing Detect failed" in caplog.text and proc.plugins.closed == 1

"""parts.remediation in the health document: the supervisor's listener thread, restarted after a failure."""

import threading

from ggdefender import health
from ggdefender.remediation import listener
from ggdefender.supervisor import run as supervisor
from ggdefender.supervisor import section


def test_a_failing_listener_shows_as_restarting_then_running(tmp_path, doc, monkeypatch):
    seen = []
    sup = supervisor.Supervisor(section.SupervisorSettings(restart_initial_backoff=0.01,
                                                           restart_max_backoff=0.01), str(tmp_path))

    class Listener:
        runs = 0

        def __init__(self, ipc, thing, state_dir, *, host=None):
            pass

        def run(self, stop):
            Listener.runs += 1
            seen.append(doc.get("parts.remediation"))
            if Listener.runs == 1:
                raise RuntimeError("journal unreadable")
            sup.stop.set()

    monkeypatch.setattr(listener, "RemediationListener", Listener)
    thread = threading.Thread(target=sup.run_remediation, args=(object(), "thingP"))
    thread.start()
    thread.join(30)
    assert seen[0] == {"state": "running", "restarts": 0}
    assert seen[1] == {"state": "running", "restarts": 1, "lastExit": "RuntimeError: journal unreadable"}
    assert doc.get("parts.remediation")["state"] == "stopped"
    assert health.problems(doc.document()) == ["part remediation stopped: the component is stopping"]

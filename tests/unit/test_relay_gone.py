"""Process B learns at once that process A's end of the relay closed (A gone), but not from its own close()."""

import threading

from ggdefender import relay_wire
from ggdefender.collector import relay_client


def test_listeners_hear_when_the_supervisor_end_closes():
    ours, theirs = relay_wire.socket_pair()
    client = relay_client.RelayClient(theirs).connect()
    heard = threading.Event()
    reasons = []
    client.on_gone(lambda why: (reasons.append(why), heard.set()))
    ours.close()  # process A died: the kernel closes its end
    assert heard.wait(10) and len(reasons) == 1 and "closed" in reasons[0]
    late = []
    client.on_gone(late.append)  # registered afterwards: told at once
    assert late == reasons
    client.close()


def test_our_own_close_is_not_the_supervisor_going_away():
    ours, theirs = relay_wire.socket_pair()
    client = relay_client.RelayClient(theirs).connect()
    reasons = []
    client.on_gone(reasons.append)
    client.close()
    client._reader.join(5)
    ours.close()
    assert reasons == []

"""Process B's parts and their host: collector, plugin host and on-device detect, as peers (part.py).

The host reads the component configuration and gives each part its section (keeping the last good one of a
part that rejects its own), starts them consumers first and closes them in reverse, so the collector stops
taking samples before the plugin host closes and detect saves its history last. The collector gets its custom
metrics from the plugin host and hands every built report to detect; neither creates or configures the other.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, List

from ggdefender.collector.service import CollectorService
from ggdefender.detect.service import DetectService
from ggdefender.part import Part, PartHost
from ggdefender.plugins.host import PluginHost

if TYPE_CHECKING:
    from ggdefender.ipc_port import CollectorPort


class CollectorProcess(PartHost):
    def __init__(self, ipc: "CollectorPort", thing: str, state_dir: str, *, source: object = None):
        self.ipc = ipc
        self.collector = CollectorService(ipc, thing, state_dir, source=source)  # first: ValueError without a thing
        # the built-in plugin defaults run until a Plugins section is accepted, so reports keep their custom
        # metrics when the first one is invalid and no last good one was saved
        self.plugins = PluginHost()
        self.detect = DetectService(ipc, thing, state_dir)
        self.collector.plugins, self.collector.observers = self.plugins, [self.detect]
        parts: List[Part] = [self.detect, self.plugins, self.collector]  # mypy checks each keeps the contract
        super().__init__(ipc, state_dir, parts)

    def reload(self) -> None:
        """Read the component configuration and dispatch it to the parts (IpcUnavailable propagates)."""
        self.configure(self.ipc.get_config())

    def run(self, stop: threading.Event) -> None:
        """Configure, start, run the report loop until `stop`; every part is closed on every way out (detect
        saves its statistics history there), start-up failures included."""
        try:
            self.reload()
            self.start()
            self.collector.run(stop, self.reload)
        finally:
            self.close()

    def wake(self) -> None:
        """Make run() look at its stop event now (signal handlers call this)."""
        self.collector.wake()

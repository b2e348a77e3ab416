"""Install.IndexUrl on the real nucleus lite: lite's recipe-runner resolves the install step's
`{configuration:/Install/IndexUrl}` (its Setenv) from ggconfigd, and install.sh creates the venv from that
package index. The index is the build's own wheels for this machine, served over HTTP inside lite's network
namespace (only loopback there) by a thread that joined it. The session's component keeps running on the
interpreter it was installed with; the install phase is run once more, as a deployment's would be, with a
clean interpreter, and everything is put back afterwards."""

import functools
import http.server
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest

import loopback_index
from lite_session import DEFENDER
import harness  # tests/lite, put on the path by lite_session
from ggdefender.devtools import wheels as w

pytestmark = pytest.mark.integration


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, fmt, *args):  # the request lines, for the test, not on stderr
        self.requests.append(fmt % args)


def _serve_in_netns(core, folder):
    """An HTTP server on 127.0.0.1 of lite's network namespace; returns (port, stop)."""
    ready, box = threading.Event(), {}

    def run():
        try:
            harness.join_netns(core.netns_pid)()
            box["server"] = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                            functools.partial(_Quiet, directory=str(folder)))
        finally:
            ready.set()
        box["server"].serve_forever()

    threading.Thread(target=run, name="lite-index", daemon=True).start()
    assert ready.wait(30) and "server" in box, "no index server in lite's network namespace"
    server = box["server"]
    return server.server_address[1], lambda: (server.shutdown(), server.server_close())


def test_install_indexurl_reaches_install_sh_through_lite_and_installs_from_that_index(lite, tmp_path):
    machine = sysconfig.get_platform().split("-", 1)[1]
    arch = {p.machine: p.greengrass for p in w.PLATFORMS}.get(machine)
    if arch is None:
        pytest.skip(f"the build makes no wheels for {machine}")
    core = lite.core
    zip_path = core.components[DEFENDER].artifacts / f"ggdefender-wheels-{arch}.zip"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(tmp_path / "zip")
    loopback_index.layout(tmp_path / "index", sorted((tmp_path / "zip").rglob("*.whl")))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "clean")], check=True, timeout=60)
    tmp_path.chmod(0o711)  # lite's install step may run as another user: it must reach the clean interpreter

    port, stop = _serve_in_netns(core, tmp_path / "index")
    work = core.root / "work" / DEFENDER
    chosen = (work / "ggdefender-python").read_text()
    env = dict(core.env)
    _Quiet.requests.clear()
    try:
        index = f"http://127.0.0.1:{port}/simple"
        lite.update_defender_config({"Install": {"IndexUrl": index}})
        core.env["GGDEFENDER_PYTHON"] = str(tmp_path / "clean" / "bin" / "python")
        install = core.launch(DEFENDER, "install")
        assert install.proc.wait(300) == 0, install.output()
        assert f"from the package index {index}" in install.output(), install.output()
        assert any("GET /simple/awscrt/" in r for r in _Quiet.requests), _Quiet.requests[-20:]
        venv_python = work / "venv" / "bin" / "python"
        assert Path((work / "ggdefender-python").read_text().strip()) == venv_python  # lite's {work:path} ends in /
        check = subprocess.run([str(venv_python), "-c", "import awsiot, cbor2, yaml"], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 0, check.stderr
    finally:
        core.env.clear()
        core.env.update(env)
        lite.update_defender_config({"Install": {"IndexUrl": ""}})
        shutil.rmtree(work / "venv", ignore_errors=True)
        (work / "ggdefender-python").write_text(chosen)
        stop()

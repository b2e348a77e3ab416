"""A package index in the PEP 503 "simple" layout, served over HTTP on 127.0.0.1 for one test (nothing leaves the
machine): what Install.IndexUrl points at in the install tests."""

import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Iterator, Tuple


def layout(index: Path, wheels: Iterable[Path]) -> None:
    """index/simple/<normalized project>/ with the wheels and an index.html linking them (PEP 503)."""
    projects: dict = {}
    for wheel in wheels:
        project = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
        folder = index / "simple" / project
        folder.mkdir(parents=True, exist_ok=True)
        (folder / wheel.name).write_bytes(wheel.read_bytes())
        projects.setdefault(project, []).append(wheel.name)
    for project, names in projects.items():
        links = "".join(f'<a href="{n}">{n}</a>\n' for n in sorted(names))
        (index / "simple" / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")


@contextlib.contextmanager
def serve(index: Path, log: Path) -> Iterator[Tuple[str, Path]]:
    """Serve `index` (laid out by layout()) on loopback; yields the index URL and the request log."""
    with open(log, "w") as errors:  # http.server logs each request on stderr
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "0"],
                                  cwd=index, stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        match = re.search(r" port (\d+) ", line)
        if not match:
            raise RuntimeError(f"http.server did not say its port: {line!r}")
        yield f"http://127.0.0.1:{match.group(1)}/simple", log
    finally:
        server.terminate()
        server.wait(30)

"""Process A's private state folder: the work folder's user (process B by default, and every other component
running as that user) cannot plant or redirect what a root process A reads. The attacker is a real process."""

import json
import os
import pwd
import subprocess
import sys

import pytest

from ggdefender import statefile

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the attacker runs as another user")


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setattr(statefile, "_private_fds", {})
    folder = tmp_path / "work"
    folder.mkdir()
    yield folder
    for fd in statefile._private_fds.values():
        os.close(fd)


def _as_nobody(work, script: str) -> None:
    """Run `script` (Python) as the unprivileged owner of the work folder, like a compromised B would."""
    nobody = pwd.getpwnam("nobody")
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    os.chmod(work.parent, 0o755)
    # any interpreter the attacker can run will do: the venv's may sit under a folder only root can read
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    subprocess.run([python, "-c", script], cwd=work, user=nobody.pw_uid, group=nobody.pw_gid,
                   extra_groups=[], check=True, timeout=30)


def test_private_folder_is_owner_only_and_paths_go_through_a_held_fd(work):
    path = statefile.private_dir(str(work))
    assert path.startswith("/proc/self/fd/")
    info = os.stat(work / statefile.PRIVATE_SUBDIR)
    assert info.st_uid == os.geteuid() and info.st_mode & 0o777 == 0o700
    statefile.atomic_write_json(os.path.join(path, "x.json"), {"a": 1})
    assert json.loads((work / "supervisor" / "x.json").read_text()) == {"a": 1}
    assert statefile.private_dir(str(work)) == path  # one folder per process
    assert statefile.shown(os.path.join(path, "x.json")) == str(work / "supervisor" / "x.json")


def test_a_symlink_in_its_place_is_moved_aside(work, tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last-good-Remediation.json").write_text("{}")
    os.symlink(elsewhere, work / "supervisor")
    path = statefile.private_dir(str(work))
    assert os.listdir(path) == []
    assert any(p.startswith("supervisor.untrusted-") for p in os.listdir(work))
    assert "supervisor" in caplog.text and "moved to" in caplog.text


def test_legacy_state_written_by_a_is_adopted(work):
    (work / "remediation-journal.json").write_text('{"version":1,"entries":{}}')
    path = statefile.private_dir(str(work))
    assert os.listdir(path) == ["remediation-journal.json"]
    assert not (work / "remediation-journal.json").exists()


@root_only
def test_a_folder_planted_by_the_work_folders_user_is_never_used(work, caplog):
    planted = {"value": {"AllowedOperations": ["kill-process"], "ProtectedProcessNames": []}, "savedAt": "x"}
    _as_nobody(work, "import os, json; os.mkdir('supervisor', 0o700); "
                     f"open('supervisor/last-good-Remediation.json', 'w').write({json.dumps(json.dumps(planted))}); "
                     f"open('remediation-journal.json', 'w').write('{{}}')")
    path = statefile.private_dir(str(work))
    assert os.listdir(path) == []  # neither the planted folder's file nor the legacy file it wrote
    assert os.stat(path).st_uid == 0
    assert (work / "remediation-journal.json").exists()  # left where it was, ignored
    assert "not a folder owned by uid 0" in caplog.text and "ignoring" in caplog.text


@root_only
def test_replacing_the_folder_after_the_check_cannot_redirect_a(work):
    path = statefile.private_dir(str(work))
    statefile.atomic_write_json(os.path.join(path, "last-good-Remediation.json"), {"value": {}, "savedAt": "t"})
    _as_nobody(work, "import os; os.rename('supervisor', 'moved'); os.mkdir('supervisor'); "
                     "open('supervisor/last-good-Remediation.json', 'w').write('{\"value\": {\"planted\": 1}}')")
    seen = statefile.read_json(os.path.join(path, "last-good-Remediation.json"), lambda v: v, dict)
    assert seen == {"value": {}, "savedAt": "t"}  # A still reads its own folder, wherever it was moved

"""Device Client runHandler safety, on real files: where a handler may come from, its permissions, the run user,
the argv convention, and bounded execution (no shell, timeout, capped output)."""

import os
import pwd

import pytest

from ggdefender.remediation import config, documents, handlers
from ggdefender.remediation.operations.base import Context, Failed, Rejected

ME = pwd.getpwuid(os.geteuid()).pw_name
SCRIPT = "#!/bin/sh\necho \"argv: $*\"\necho \"to stderr\" >&2\n"


@pytest.fixture
def hdir(tmp_path):
    d = tmp_path / "handlers"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)  # the umask may have narrowed or widened mkdir's mode
    return d


def settings_for(hdir, **extra):
    return config.parse(dict({"HandlerDirectory": str(hdir), "HandlerUser": ME, "AllowedRunAsUsers": [ME],
                              "HandlerTimeoutSeconds": "2"}, **extra))


def handler(hdir, name="fix.sh", body=SCRIPT, mode=0o700):
    path = hdir / name
    path.write_text(body)
    os.chmod(path, mode)
    return path


def step(name="fix.sh", args=(), run_as=""):
    action = {"name": "s", "type": "runHandler", "input": {"handler": name, "args": list(args)}}
    if run_as:
        action["runAsUser"] = run_as
    return action


def parse(hdir, action, **extra):
    s = settings_for(hdir, **extra)
    return documents.parse({"version": "1.0", "steps": [{"action": action}]}, s).steps[0], s


def test_owner_only_handler_in_a_private_directory_is_accepted(hdir):
    path = handler(hdir)
    assert handlers.check_handler("fix.sh", settings_for(hdir)) == str(path)


@pytest.mark.parametrize("mode, words", [(0o720, "only its owner may write"), (0o702, "only its owner may write"),
                                         (0o4700, "setuid"), (0o600, "executable")])
def test_handler_file_mode_is_checked(hdir, mode, words):
    handler(hdir, mode=mode)
    with pytest.raises(Rejected) as err:
        handlers.check_handler("fix.sh", settings_for(hdir))
    assert f"mode {mode & 0o7777:o}" in err.value.reason and words in err.value.reason


def test_writable_handler_directory_is_refused(hdir):
    handler(hdir)
    os.chmod(hdir, 0o777)
    with pytest.raises(Rejected, match="writable only by its owner"):
        handlers.check_handler("fix.sh", settings_for(hdir))


def test_symlink_and_missing_handlers_are_refused(hdir, tmp_path):
    target = handler(tmp_path, name="elsewhere.sh")
    os.symlink(target, hdir / "link.sh")
    with pytest.raises(Rejected, match="not a symlink"):
        handlers.check_handler("link.sh", settings_for(hdir))
    with pytest.raises(Rejected, match="does not exist"):
        handlers.check_handler("absent.sh", settings_for(hdir))


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_handler_owned_by_another_user_is_refused(hdir):
    path = handler(hdir)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(Rejected, match="is owned by uid"):
        handlers.check_handler("fix.sh", settings_for(hdir))


def test_run_user_comes_from_configuration_not_from_the_document(hdir):
    st, s = parse(hdir, step(run_as="someoneelse"))
    with pytest.raises(Rejected, match="not in Remediation.AllowedRunAsUsers"):
        handlers.resolve_user(st, s)
    st, s = parse(hdir, step())
    assert handlers.resolve_user(st, s).pw_name == ME


@pytest.mark.skipif(os.geteuid() != 0, reason="the no-silent-root rules apply when the listener is root")
def test_root_listener_never_falls_back_to_root(hdir):
    st, s = parse(hdir, step(), HandlerUser="", AllowedRunAsUsers=[])
    with pytest.raises(Rejected, match="refusing to run a handler as root"):
        handlers.resolve_user(st, s)
    st, s = parse(hdir, step(), HandlerUser="root", AllowedRunAsUsers=[])
    with pytest.raises(Rejected, match='needs "root"'):
        handlers.resolve_user(st, s)


def ctx(s):
    return Context(settings=s, safety=None, job="t")


def test_handler_runs_without_a_shell_with_the_device_client_argv(hdir):
    handler(hdir)
    st, s = parse(hdir, step(args=["a b", "$(id);rm -rf /", "`x`"], run_as=ME))
    out = handlers.run_step(st, ctx(s), include_stdout=True)
    # argv[1] is runAsUser like the Device Client; metacharacters arrive as plain text
    assert out.details["stdout"].strip() == f"argv: {ME} a b $(id);rm -rf / `x`"
    assert out.details["exitCode"] == "0" and out.details["stderr"].strip() == "to stderr"


def test_non_zero_exit_and_allow_stderr_fail_the_step(hdir):
    handler(hdir, name="bad.sh", body="#!/bin/sh\necho oops >&2\nexit 3\n")
    st, s = parse(hdir, step(name="bad.sh"))
    with pytest.raises(Failed, match="exited with status 3") as err:
        handlers.run_step(st, ctx(s), include_stdout=False)
    assert err.value.details["stderr"].strip() == "oops"
    handler(hdir)
    st, s = parse(hdir, dict(step(), allowStdErr="0"))
    with pytest.raises(Failed, match="1 stderr lines; allowStdErr is 0"):
        handlers.run_step(st, ctx(s), include_stdout=False)


def test_a_hanging_handler_is_stopped_at_the_timeout_and_output_is_capped(hdir):
    handler(hdir, name="hang.sh", body="#!/bin/sh\nhead -c 100000 /dev/zero | tr '\\0' x\nsleep 60\n")
    st, s = parse(hdir, step(name="hang.sh"), HandlerTimeoutSeconds="1", MaxOutputBytes="256")
    with pytest.raises(Failed, match="timed out after 1s") as err:
        handlers.run_step(st, ctx(s), include_stdout=True)
    assert err.value.details["stdout"] == "x" * 256

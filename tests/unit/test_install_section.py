"""The Install section (read by the recipe's install step): index_url's one rule, and process A's verdict on the
section, so a misspelt key or a bad URL is named at once rather than at the next install."""

import pytest

from ggdefender import defaults, health, settings
from ggdefender.supervisor import index_url
from ggdefender.part import PartHost
from ggdefender.settings import ConfigError
from ggdefender.supervisor.install_section import INSTALL_NOTE, InstallSection


@pytest.mark.parametrize("value", ["", "https://pypi.org/simple", "http://127.0.0.1:8080/simple/",
                                   "https://user:p%40ss@mirror.example.com/pypi/simple", "http://[::1]:3141/root/pypi"])
def test_index_urls_a_deployment_may_set(value):
    assert index_url.problem(value) is None


def test_the_logged_form_has_no_login():
    assert index_url.shown("https://user:pw@mirror.example.com:8443/simple") == "https://mirror.example.com:8443/simple"
    assert index_url.shown("http://[::1]:3141/root/pypi") == "http://[::1]:3141/root/pypi"


def test_a_refused_url_is_named_without_its_password():
    why = index_url.problem("ftp://user:s3cret@example.com/simple")
    assert "'ftp://***@example.com/simple'" in why and "s3cret" not in why


def test_a_non_string_is_named():
    assert "expected a string" in index_url.problem(7)


def test_the_default_is_offline_and_accepted():
    part = InstallSection()
    part.reconfigure(defaults.with_defaults(["Install"], None))
    assert part.index_url == "" and defaults.DEFAULTS["Install"] == {"IndexUrl": ""}
    assert "Install" in settings.SECTIONS


def test_a_misspelt_key_is_named_with_the_right_one():
    with pytest.raises(ConfigError, match=r"Install: unknown key\(s\) IndexURL \(did you mean IndexUrl\?\)"):
        InstallSection().reconfigure({"IndexUrl": "", "IndexURL": "https://pypi.org/simple"})


def test_a_bad_url_is_rejected_naming_the_key_and_the_consequence():
    with pytest.raises(ConfigError) as e:
        InstallSection().reconfigure({"IndexUrl": "https://x.org/$(id)"})
    assert "Install.IndexUrl" in str(e.value) and "'$'" in str(e.value) and "next install" in str(e.value)


def test_the_verdict_reaches_the_health_document_with_when_it_applies(tmp_path, monkeypatch):
    reports = []
    monkeypatch.setattr(health, "report", lambda ipc, path, value: reports.append((path, value)))
    part = InstallSection()
    host = PartHost(None, str(tmp_path), [part], notes={"Install": INSTALL_NOTE})
    assert host.configure_part(part, {"IndexUrl": "https://pypi.org/simple"}) is True
    assert host.configure_part(part, {"IndexUrl": "ftp://x"}) is False
    verdicts = [v for p, v in reports if p == "configuration.Install"]
    assert verdicts[0]["accepted"] is True and verdicts[0]["reason"] == INSTALL_NOTE
    assert verdicts[1]["accepted"] is False and "http:// or https://" in verdicts[1]["reason"]
    assert part.index_url == "https://pypi.org/simple"  # the last good one


def test_a_job_can_never_be_allowed_to_change_where_the_install_comes_from():
    from ggdefender.remediation import config as remediation_config

    with pytest.raises(ConfigError, match="'Install/IndexUrl': the Install section can never be changed by a job"):
        remediation_config.parse({"SetConfigAllowedKeys": ["Install/IndexUrl"]})

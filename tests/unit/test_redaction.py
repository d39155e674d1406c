"""The one redactor (splatflow.redaction): secret values and their parts, URL userinfo, query strings and
fragments, secret-named pairs, malformed URLs; and the places that use it (notify, failure records, CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from splatflow.redaction import MASK, redact, url_parts

TOKEN = "Tok3nQ9xLm2Zv8Rw"
PASSWORD = "Pa55-w0rd-7d1e"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPLATFLOW_NOTIFY_URL", "SPLATFLOW_SMTP_PASSWORD", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "KFP_TOKEN", "KFP_COOKIE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", f"https://hooks.example.com/services/T0/B1/{TOKEN}?key={TOKEN}x")
    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", PASSWORD)


@pytest.mark.parametrize("text", [
    f"POST https://hooks.example.com/services/T0/B1/{TOKEN}?key={TOKEN}x failed",   # the whole URL
    f"URL can't contain control characters. '/services/T0/B1/{TOKEN}?key={TOKEN}x'",  # urllib quotes a part
    f"bad value {TOKEN}x in query",                                                   # one query value
    f"login failed for {PASSWORD}",                                                   # a plain secret
])
def test_known_secrets_and_their_parts(secret_env: None, text: str) -> None:
    out = redact(text)
    assert TOKEN not in out and PASSWORD not in out and MASK in out


@pytest.mark.parametrize(("text", "gone", "kept"), [
    ("see https://user:hunter2pw@host.example/x?token=abc123def#frag9", ["hunter2pw", "abc123def", "frag9", "user:"],
     ["https://", "host.example/x"]),
    ("nonnumeric port: 'http://[::1/hook?token=zzSECRETzz'", ["zzSECRETzz"], ["http://[::1/hook?"]),
    ("presigned https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA1/x&X-Amz-Signature=deadbeef1234",
     ["deadbeef1234", "AKIA1"], ["b.s3.amazonaws.com/k"]),
    ("smtp://mailer:S3cretPw@smtp.example.com:587?to=a@x", ["S3cretPw", "mailer"], ["smtp.example.com:587"]),
    ("env AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7 and password=letmein42;", ["wJalrXUtnFEMI", "letmein42"],
     ["AWS_SECRET_ACCESS_KEY=", "password="]),
])
def test_unknown_secrets_in_urls_and_pairs(text: str, gone: list[str], kept: list[str]) -> None:
    out = redact(text)
    for g in gone:
        assert g not in out, out
    for k in kept:
        assert k in out, out


def test_plain_text_and_storage_addresses_are_left_alone() -> None:
    text = "cannot read s3://bucket/scene/run-1/manifest.json: no such object (file:///tmp/a b/c.sog)"
    assert redact(text) == text


def test_url_parts_never_raises() -> None:
    assert url_parts("http://[::1/x?y#z") == {"scheme": "http", "userinfo": "", "host": "[::1", "path": "/x",
                                              "query": "y", "fragment": "z"}
    assert url_parts("no url at all")["host"] == "no url at all"


@pytest.mark.parametrize("url", [
    f"https://hooks.example.com/services/T0?token={TOKEN} more",  # spaces: urllib quotes path + query
    f"http://[::1/hook?token={TOKEN}",                              # does not parse at all
    f"https://user:{TOKEN}@hooks.example.com:99x/x",                # a port that is not a number
])
def test_a_webhook_url_that_fails_to_parse_leaks_nothing(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture, url: str) -> None:
    from splatflow.stages.notify import send

    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", url)
    with caplog.at_level("DEBUG"):
        res = send("failed", scene="s", report={}, target="webhook", error=f"stage error quoting {url}")
    assert res["delivered"] is False
    shown = json.dumps(res) + caplog.text
    assert TOKEN not in shown and "webhook" in shown
    assert "valid http(s) URL" in json.dumps(res) or "InvalidURL" in json.dumps(res)


def test_failure_records_and_cli_errors_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from splatflow.tasks import error_line

    line = error_line(RuntimeError(f"GET https://x.example/a?sig={TOKEN} failed"))
    assert TOKEN not in line and line.startswith("RuntimeError: GET https://x.example/a?")
    # the CLI's one-line error goes through the same redactor
    proc = subprocess.run([sys.executable, "-m", "splatflow.cli", "ingest", f"https://u:{TOKEN}@h.example/p.zip",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unsupported source 'https://[redacted]@h.example")
    assert TOKEN not in proc.stderr and not (tmp_path / "out").exists()

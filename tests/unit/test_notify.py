"""The notify stage against real local servers: an HTTP webhook receiver, moto's SNS (read back through an SQS
subscription), and aiosmtpd (plain, STARTTLS + AUTH, implicit TLS + AUTH). No secret may reach a log line."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest

from splatflow.errors import InputError, NotifyError
from splatflow.stages.notify import build_message, send

TOKEN = "xoxb-T0SECRET/B0SECRET/VerySecretWebhookToken42"
PASSWORD = "pw-Sup3r-S3cret-Value"
SUMMARY = {"splats": 90854, "bytes": 1196155, "bytes_per_splat": 13.17, "ratio": 4.25, "psnr": 26.43,
           "codec_psnr": 61.25, "seconds": {"train": 600.5, "compress": 7.5}, "total_seconds": 608.0}
REPORT: dict[str, Any] = {"run_id": "run-7", "summary": SUMMARY, "source_uri": "s3://in/scans/guitar.zip",
                          "viewer_uri": "/srv/out/guitar/run-7/index.html",
                          "manifest_uri": "/srv/out/guitar/run-7/manifest.json",
                          "urls": {"guitar.sog": "/srv/out/guitar/run-7/guitar.sog"}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPLATFLOW_WEBHOOK_URL", "SPLATFLOW_NOTIFY_URL", "SPLATFLOW_SNS_TOPIC_ARN", "SPLATFLOW_SMTP_HOST",
                 "SPLATFLOW_SMTP_PASSWORD", "SPLATFLOW_NOTIFY_TARGET", "SPLATFLOW_NOTIFY_STRICT",
                 "SPLATFLOW_PUBLIC_BASE_URL", "SPLATFLOW_LINK_EXPIRES", "SPLATFLOW_SMTP_CA_FILE"):
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------------------- webhook receiver
class Receiver:
    """A local HTTP server that records POSTed JSON; answers ``fail_first`` requests with 500."""

    def __init__(self, fail_first: int = 0, always_fail: bool = False) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.fail_first, self.always_fail = fail_first, always_fail
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                data = self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append(self.path)
                if outer.always_fail or outer.fail_first > 0:
                    outer.fail_first -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(data))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_message_text_and_blocks() -> None:
    msg = build_message("succeeded", scene="guitar", report=REPORT)
    text = msg.text()
    for fact in ("guitar published", "Status: succeeded", "Run: run-7", "Splats: 90,854", "Size: 1.2 MB",
                 "13.17 B/splat", "Ratio: 4.2x", "PSNR: 26.43 dB", "SOG vs PLY: 61.25 dB PSNR",
                 "Time: 10 min 08 s (train 10 min 00 s, "
                 "compress 7.5 s)", "Open the viewer: /srv/out/guitar/run-7/index.html",
                 "Download the SOG: /srv/out/guitar/run-7/guitar.sog"):
        assert fact in text, fact
    assert "Failed stage" not in text
    slack = msg.slack()
    assert slack["text"].endswith("splatflow: guitar published")
    assert slack["blocks"][0]["type"] == "header"
    fields = [f["text"] for b in slack["blocks"] if "fields" in b for f in b["fields"]]
    assert "*PSNR*\n26.43 dB" in fields and "*Ratio*\n4.2x" in fields

    escaped = build_message("failed", scene="g", report={"content_uri": "https://h/g.sog?a=1&b=2"},
                            error="x < y && z > w").slack()
    assert "x &lt; y &amp;&amp; z &gt; w" in json.dumps(escaped) and "a=1&amp;b=2|Download" in json.dumps(escaped)

    fail = build_message("failed", scene="guitar", report={"run_id": "r"}, failed_stage="train",
                         error="CUDA out of memory\n" + "x" * 5000)
    assert fail.title == "splatflow: guitar failed at train"
    text = fail.text()
    assert "Failed stage: train" in text and "CUDA out of memory" in text
    assert len(fail.error or "") == 1500  # long errors are cut
    assert any("*Failed stage:* train" in b.get("text", {}).get("text", "") for b in fail.slack()["blocks"])


def test_webhook_delivery_with_retry(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    receiver.fail_first = 1  # a 500 first: retried
    res = send("SUCCEEDED", scene="guitar", report=REPORT)
    assert res == {"status": "succeeded", "delivered": True, "channel": "webhook(127.0.0.1)",
                   "channels": {"webhook(127.0.0.1)": {"delivered": True}}}
    assert len(receiver.paths) == 2 and len(receiver.bodies) == 1
    body = receiver.bodies[0]
    assert set(body) == {"text", "blocks"} and "guitar published" in body["text"]
    assert "26.43 dB" in json.dumps(body["blocks"])


def test_failure_is_reported_not_raised(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.always_fail = True
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    res = send("succeeded", scene="guitar", report=REPORT)
    assert res["delivered"] is False and "HTTP Error 500" in res["channels"]["webhook(127.0.0.1)"]["error"]
    assert len(receiver.paths) == 3  # retried, then given up
    monkeypatch.setenv("SPLATFLOW_NOTIFY_STRICT", "1")
    with pytest.raises(NotifyError, match="webhook"):
        send("succeeded", scene="guitar", report=REPORT)
    with pytest.raises(NotifyError):
        send("failed", scene="guitar", report={}, target="carrier-pigeon")


def test_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert send("succeeded", scene="s", report={}) == {"status": "succeeded", "delivered": False,
                                                         "channel": "none", "channels": {}}
    assert send("failed", scene="s", report={}, target="none")["channel"] == "none"
    res = send("failed", scene="s", report={}, target=f"https://hooks.example.com/services/{TOKEN}")
    assert res["delivered"] is False and "secrets" in res["channels"]["target"]["error"]
    assert TOKEN not in json.dumps(res)
    with pytest.raises(InputError, match="unknown run status"):
        send("maybe", scene="s", report={})
    with socket.socket() as closed:  # a local port that is bound but never listens: connections are refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        started = time.monotonic()
        res = send("failed", scene="s", report={}, target=f"smtp://127.0.0.1:{port}?to=a@example.com&security=none")
        took = time.monotonic() - started
    assert res["delivered"] is False  # nothing listens there: reported, not raised
    assert "refused" in res["channels"]["smtp(127.0.0.1)"]["error"].lower()
    assert took < 10, f"a refused connection took {took:.1f} s"  # three quick tries, no DNS, no network
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL_FILE", "/nonexistent/secret")  # a Secret that is not mounted
    res = send("succeeded", scene="s", report={})
    assert res["delivered"] is False and "cannot be read" in res["channels"]["target"]["error"]


# ---------------------------------------------------------------------------- SNS (moto server)
def test_sns_message_reaches_a_subscriber(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    sns = boto3.client("sns")
    sqs = boto3.client("sqs")
    topic = sns.create_topic(Name="splatflow-runs")["TopicArn"]
    queue = sqs.create_queue(QueueName="runs-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    monkeypatch.setenv("SPLATFLOW_SNS_TOPIC_ARN", topic)

    res = send("failed", scene="guitar", report={"run_id": "r9"}, failed_stage="sfm",
                 error="only 3 of 40 images registered")
    assert res["delivered"] is True and res["channel"] == "sns(splatflow-runs)"
    got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(got) == 1
    envelope = json.loads(got[0]["Body"])
    assert envelope["Subject"] == "splatflow: guitar failed at sfm"
    assert "Failed stage: sfm" in envelope["Message"] and "only 3 of 40 images" in envelope["Message"]
    assert envelope["MessageAttributes"]["status"]["Value"] == "failed"


def test_presigned_and_public_links(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    base = f"s3://{s3_server['bucket']}/out/guitar/r1"
    report = {"run_id": "r1", "viewer_uri": f"{base}/index.html", "manifest_uri": f"{base}/manifest.json",
              "urls": {"guitar.sog": f"{base}/guitar.sog"}}
    text = build_message("succeeded", scene="guitar", report=report, link_expires=3600).text()
    assert "Download the SOG: http://127.0.0.1:" in text and "X-Amz-Expires=3600" in text
    # a presigned page cannot load its siblings from a private bucket: named, not linked
    assert f"Viewer: {base}/index.html" in text and "Open the viewer" not in text
    monkeypatch.setenv("SPLATFLOW_PUBLIC_BASE_URL", "https://cdn.example.com/")
    text = build_message("succeeded", scene="guitar", report=report).text()
    assert "Open the viewer: https://cdn.example.com/out/guitar/r1/index.html" in text
    assert "X-Amz" not in text


# ---------------------------------------------------------------------------- SMTP (aiosmtpd)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return d / "cert.pem", d / "key.pem"


class Mailbox:
    """aiosmtpd handler: keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture()
def smtp_server(request: pytest.FixtureRequest, tls_files: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    """An aiosmtpd server; ``request.param`` is the security: none | starttls | ssl (the last two need AUTH)."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    security = request.param
    mailbox = Mailbox()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*map(str, tls_files))

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> AuthResult:
        ok = auth.login == b"robot" and auth.password == PASSWORD.encode()
        return AuthResult(success=ok, handled=False)

    port = _free_port()
    kwargs: dict[str, Any] = {}
    if security == "starttls":
        kwargs = {"tls_context": ctx, "require_starttls": True, "authenticator": authenticator,
                  "auth_required": True}
    elif security == "ssl":
        # implicit TLS: aiosmtpd cannot tell the session is encrypted, so it is told not to insist on STARTTLS
        kwargs = {"ssl_context": ctx, "authenticator": authenticator, "auth_required": True,
                  "auth_require_tls": False}
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield {"port": port, "security": security, "mailbox": mailbox, "ca": tls_files[0]}
    finally:
        controller.stop()


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("smtp_server", ["none", "starttls", "ssl"], indirect=True)
def test_smtp_delivery(smtp_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    sec = smtp_server["security"]
    user = "" if sec == "none" else "robot@"
    monkeypatch.setenv("SPLATFLOW_SMTP_CA_FILE", str(smtp_server["ca"]))
    if sec != "none":
        monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", PASSWORD)
    scheme = "smtps" if sec == "ssl" else "smtp"
    target = (f"{scheme}://{user.replace('@', '')}{'@' if user else ''}127.0.0.1:{smtp_server['port']}"
              f"?to=ops@example.com,lead@example.com&from=splatflow@example.com&security={sec}")
    res = send("succeeded", scene="guitar", report=REPORT, target=target)
    assert res["delivered"] is True, res
    assert res["channel"] == "smtp(127.0.0.1)"
    (env,) = smtp_server["mailbox"].messages
    assert env.rcpt_tos == ["ops@example.com", "lead@example.com"]
    mail = message_from_bytes(env.content)
    assert mail["Subject"] == "splatflow: guitar published"
    assert "PSNR: 26.43 dB" in mail.get_payload(decode=True).decode()


@pytest.mark.parametrize("smtp_server", ["starttls"], indirect=True)
def test_smtp_env_config_and_wrong_password(smtp_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SPLATFLOW_SMTP_PORT", str(smtp_server["port"]))
    monkeypatch.setenv("SPLATFLOW_SMTP_USER", "robot")
    monkeypatch.setenv("SPLATFLOW_SMTP_TO", "ops@example.com")
    monkeypatch.setenv("SPLATFLOW_SMTP_CA_FILE", str(smtp_server["ca"]))
    secret_file = smtp_server["ca"].parent / "smtp-password"
    secret_file.write_text(PASSWORD + "\n")  # a mounted Secret
    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD_FILE", str(secret_file))
    assert send("failed", scene="s", report={}, failed_stage="train", error="boom")["delivered"] is True
    (env,) = smtp_server["mailbox"].messages
    assert "Failed stage: train" in message_from_bytes(env.content).get_payload(decode=True).decode()
    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", "wrong-password")
    res = send("succeeded", scene="s", report={})
    assert res["delivered"] is False and "Authentication" in res["channels"]["smtp(127.0.0.1)"]["error"]


# ---------------------------------------------------------------------------- no secret in any log line
@pytest.mark.parametrize("smtp_server", ["starttls"], indirect=True)
def test_no_secret_in_logs(smtp_server: dict[str, Any], receiver: Receiver, s3_server: dict[str, str],
                           monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
                           capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", PASSWORD)
    monkeypatch.setenv("SPLATFLOW_SMTP_CA_FILE", str(smtp_server["ca"]))
    smtp = f"smtp://robot@127.0.0.1:{smtp_server['port']}?to=ops@example.com"
    results = [send("succeeded", scene="guitar", report=REPORT, target=f"webhook {smtp}")]
    # failures: the error text itself carries the secrets (as a careless stage might), the webhook answers 500,
    # the SMTP login is refused: all logged, none with a secret
    receiver.always_fail = True
    leaky = f"could not reach {receiver.url} with password {PASSWORD} and {s3_server['AWS_SECRET_ACCESS_KEY']}"
    results.append(send("failed", scene="guitar", report=REPORT, target=f"webhook {smtp}",
                          failed_stage="publish", error=leaky))
    from splatflow.cli import main

    monkeypatch.setenv("SPLATFLOW_SMTP_PASSWORD", PASSWORD + "-wrong")
    assert main(["notify", "failed", "--scene", "guitar", "--target", f"webhook {smtp}", "--error", leaky]) == 0
    assert results[0]["delivered"] is True and results[1]["delivered"] is False
    out, err = capfd.readouterr()
    captured = "\n".join(r.getMessage() for r in caplog.records) + caplog.text + out + err + json.dumps(results)
    assert "webhook(127.0.0.1)" in captured  # the logs do name the channel ...
    for secret in (TOKEN, "VerySecretWebhookToken42", PASSWORD, s3_server["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in captured, f"secret leaked: {secret[:6]}..."  # ... never a secret
    # and the messages that went out do not carry them either
    assert TOKEN not in json.dumps(receiver.bodies) and PASSWORD not in json.dumps(receiver.bodies)
    for env in smtp_server["mailbox"].messages:
        assert PASSWORD.encode() not in env.content and TOKEN.encode() not in env.content


# ---------------------------------------------------------------------------- link lifetime and credentials
@pytest.mark.parametrize(("value", "said"), [
    ("7d", "is not a whole number of seconds"),
    ("-5", "is not a whole number of seconds"),
    ("0", "is not a positive whole number"),
    ("604801", "longer than 7 days"),
])
def test_a_bad_link_lifetime_is_refused_clearly(value: str, said: str, receiver: Receiver,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("SPLATFLOW_LINK_EXPIRES", value)
    with pytest.raises(InputError, match=said) as err:
        send("succeeded", scene="guitar", report=REPORT)
    assert "SPLATFLOW_LINK_EXPIRES" in err.value.message and "604800" in str(err.value.hint)
    with pytest.raises(InputError, match="longer than 7 days"):
        send("succeeded", scene="guitar", report=REPORT, link_expires=8 * 24 * 3600)
    assert receiver.bodies == []
    monkeypatch.setenv("SPLATFLOW_LINK_EXPIRES", " 604800 ")  # the ConfigMap's default: fine
    assert send("succeeded", scene="guitar", report=REPORT)["delivered"] is True


def test_links_signed_with_temporary_credentials_say_so(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    base = f"s3://{s3_server['bucket']}/out/guitar/r1"
    report = {"run_id": "r1", "manifest_uri": f"{base}/manifest.json", "urls": {"guitar.sog": f"{base}/guitar.sog"}}
    monkeypatch.setenv("SPLATFLOW_LINK_EXPIRES", "3600")
    text = build_message("succeeded", scene="guitar", report=report, link_expires=3600).text()
    assert "temporary credentials" not in text  # static keys: the links last their 3600 s
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-value-0123")
    with caplog.at_level(logging.WARNING, "splatflow.notify"):
        text = build_message("succeeded", scene="guitar", report=report, link_expires=3600).text()
    assert "Links: signed with temporary credentials: they stop working when those expire" in text
    assert "temporary credentials" in caplog.text
    monkeypatch.setenv("SPLATFLOW_PUBLIC_BASE_URL", "https://cdn.example.com")  # nothing signed: nothing to say
    assert "temporary" not in build_message("succeeded", scene="guitar", report=report).text()


# ---------------------------------------------------------------------------- the pipeline's exit task
RUN = "0b7e2f4c-5a61-4d8e-9f00-123456789abc"


def test_notify_run_names_the_failed_stage_and_its_error(receiver: Receiver, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from splatflow.errors import SfmError
    from splatflow.stages.notify import notify
    from splatflow.tasks import record_failure

    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    out = (tmp_path / "out").as_uri()
    with pytest.raises(SfmError), record_failure("sfm", out, RUN):
        raise SfmError("only 1 of 4 images registered", hint="take overlapping photos")
    res = notify("FAILED", error_message="Task exit-handler-1 failed.", task_name="exit-handler-1",
                     source_uri="s3://in/scans/Noise Test.zip", output_uri=out, run_id=RUN, target="")
    assert res["delivered"] is True and res["failed_stage"] == "sfm" and res["scene"] == "noise-test"
    (body,) = receiver.bodies
    assert body["text"].endswith("splatflow: noise-test failed at sfm")
    assert "Failed stage: sfm" in _plain(body) and "SfmError: only 1 of 4 images registered" in _plain(body)

    # no record (the pod was killed): KFP's own words, stage unknown
    receiver.bodies.clear()
    res = notify("FAILED", error_message="Task exit-handler-1 failed.", task_name="exit-handler-1",
                     source_uri="s3://in/x", output_uri=out, run_id="other-run", target="")
    assert "failed_stage" not in res
    assert "Failed stage: unknown" in _plain(receiver.bodies[0])
    assert "Task exit-handler-1 failed." in _plain(receiver.bodies[0])


def test_notify_run_sends_what_it_knows_when_storage_is_down(receiver: Receiver, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from splatflow import tasks
    from splatflow.errors import StorageError
    from splatflow.stages import publish
    from splatflow.stages.notify import notify

    def down(*args: Any) -> None:
        raise StorageError("endpoint http://minio:9000 is unreachable", hint="check AWS_ENDPOINT_URL")

    monkeypatch.setattr(publish, "published_run", down)
    monkeypatch.setattr(tasks, "read_failure", down)
    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    with caplog.at_level(logging.WARNING, "splatflow.notify"):
        ok = notify("SUCCEEDED", error_message="", task_name="exit-handler-1", source_uri="s3://in/lund",
                        output_uri="s3://out/scenes", run_id=RUN, target="")
        bad = notify("FAILED", error_message="Task exit-handler-1 failed.", task_name="exit-handler-1",
                         source_uri="s3://in/lund", output_uri="s3://out/scenes", run_id=RUN, target="")
    assert ok["delivered"] is True and bad["delivered"] is True
    assert receiver.bodies[0]["text"].endswith("splatflow: lund published") and RUN in _plain(receiver.bodies[0])
    assert "Task exit-handler-1 failed." in _plain(receiver.bodies[1])
    assert "could not read what publish wrote" in caplog.text and "could not read which stage failed" in caplog.text


def test_notify_run_links_what_publish_wrote(receiver: Receiver, sample_sog: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from splatflow.stages.notify import final_status, notify
    from splatflow.stages.publish import publish

    monkeypatch.setenv("SPLATFLOW_WEBHOOK_URL", receiver.url)
    out = (tmp_path / "out").as_uri()
    publish(out, scene="lund", run_id=RUN, files={"sog": sample_sog}, reports={"compress": {"splats": 7}},
            viewer=False)
    res = notify("SUCCEEDED", error_message=None, task_name=None, source_uri="file:///data/photos/lund",
                     output_uri=out, run_id=RUN, target="")
    assert res["delivered"] is True and "failed_stage" not in res
    text = _plain(receiver.bodies[0])
    assert f"{out}/lund/{RUN}/lund.sog" in text and "Splats\n7" in text
    assert final_status("CANCELLED", "", "exit-handler-1") == {
        "status": "canceled", "error": "pipeline task exit-handler-1 ended in state CANCELLED"}
    assert final_status("", None, None)["status"] == "failed"  # an unknown state is never reported as success


def _plain(body: dict[str, Any]) -> str:
    """The plain-text fallback and every block's text of a webhook body, unescaped."""
    texts = [body["text"]] + [json.dumps(b) for b in body["blocks"]]
    return "\n".join(texts).replace("\\n", "\n").replace("*", "")

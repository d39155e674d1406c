"""Notify stage: tell people how a run ended, over a webhook (Slack-compatible JSON), Amazon SNS or SMTP e-mail.

Targets (``target``; several separated by spaces; never a secret, so it can be a pipeline parameter):

- ``webhook``                           POST to ``SPLATFLOW_WEBHOOK_URL`` (secret; alias ``SPLATFLOW_NOTIFY_URL``)
- ``sns:arn:aws:sns:REGION:ACCOUNT:TOPIC`` publish to an SNS topic (boto3, default credential chain; ``sns`` alone
  takes ``SPLATFLOW_SNS_TOPIC_ARN``)
- ``smtp://[user@]host[:port]?to=a@x,b@y&from=me@x&security=starttls|ssl|none`` send e-mail (``smtps://`` =
  implicit TLS); ``smtp`` alone takes ``SPLATFLOW_SMTP_HOST``, ``_PORT``, ``_USER``, ``_FROM``, ``_TO``,
  ``_SECURITY``; the password only from ``SPLATFLOW_SMTP_PASSWORD`` (secret); ``SPLATFLOW_SMTP_CA_FILE`` trusts a
  private CA
- ``none``                              no notification

With no target: ``SPLATFLOW_NOTIFY_TARGET``, else every channel whose settings are present in the environment.
Every secret may instead be given as a file (``<NAME>_FILE``, a mounted Kubernetes Secret).

The message carries status, scene, run id, splats, size, ratio, PSNR, time per stage and links; on failure the
failed stage and the error. Links to ``s3://`` objects are presigned for ``link_expires`` seconds
(``SPLATFLOW_LINK_EXPIRES``, default 7 days, the S3 maximum; a value that is not a whole number of seconds from
1 to 604800 is an InputError) unless ``SPLATFLOW_PUBLIC_BASE_URL`` names the
public address of the bucket root (CDN, website endpoint, MinIO with anonymous read), which also makes the viewer
page link work (a presigned page cannot load
its sibling files from a private bucket, so without a public base the viewer is named, not linked). A presigned
link stops working when the credentials that signed it expire: with temporary credentials (a session token:
IRSA, an instance role, SSO) that is usually hours, whatever ``link_expires`` says, and the message says so.

In the pipeline, :func:`notify` is the exit task: it maps KFP's final status, reads back what publish wrote
(on success) or the failure a stage recorded (``splatflow.tasks``; on failure), and sends what it knows even when
reading those fails.

A failed delivery is logged and reported (``delivered: False``) but never raised, so it cannot fail a run that
succeeded — unless ``strict`` (``SPLATFLOW_NOTIFY_STRICT=1``), which raises NotifyError. Logs, errors and the
returned dict never contain a secret: webhooks are named by host only, and every error text goes through
:func:`splatflow.redaction.redact` (secret values and their parts, URL userinfo and query strings).
"""

from __future__ import annotations

import json
import logging
import os
import re
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from splatflow import storage
from splatflow.errors import InputError, NotifyError
from splatflow.redaction import redact, setting, url_parts

__all__ = [
    "MAX_LINK_EXPIRES", "STATUSES", "TEMPORARY_CREDENTIAL_ENV", "Message", "SmtpConfig", "build_message",
    "check_link_expires", "final_status", "link_expires_from_env", "link_for", "notify", "send", "send_smtp",
    "send_sns", "send_webhook", "temporary_credentials"
]

log = logging.getLogger("splatflow.notify")

STATUSES = {"succeeded": "succeeded", "success": "succeeded", "ok": "succeeded", "failed": "failed",
            "failure": "failed", "error": "failed", "canceled": "canceled", "cancelled": "canceled"}
_ICON = {"succeeded": ":white_check_mark:", "failed": ":x:", "canceled": ":heavy_minus_sign:"}
_ERROR_CHARS = 1500
MAX_LINK_EXPIRES = 7 * 24 * 3600  # S3's limit for presigned URLs (SigV4)
TEMPORARY_CREDENTIAL_ENV = ("AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


# ---------------------------------------------------------------------------- environment
def _env(name: str) -> str | None:
    """A setting from the environment, or from the file named by ``<name>_FILE`` (a mounted Secret); an unreadable
    file is an InputError (:func:`splatflow.redaction.setting`)."""
    return setting(name, strict=True)


# ---------------------------------------------------------------------------- message
def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"  # pragma: no cover


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def check_link_expires(seconds: int, source: str = "link_expires") -> int:
    """``seconds`` if it is a usable presigned-link lifetime (1 s to 7 days), else InputError."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
        raise InputError(f"{source}={seconds!r} is not a positive whole number of seconds",
                         hint="e.g. 86400 for one day; at most 604800 (7 days)")
    if seconds > MAX_LINK_EXPIRES:
        raise InputError(f"{source}={seconds} s is longer than 7 days, the most S3 allows for presigned links",
                         hint="use at most 604800; for links that last, serve the bucket and set "
                              "SPLATFLOW_PUBLIC_BASE_URL")
    return seconds


def link_expires_from_env() -> int:
    """The presigned-link lifetime from ``SPLATFLOW_LINK_EXPIRES`` (seconds; unset: 7 days); InputError if bad."""
    raw = (os.environ.get("SPLATFLOW_LINK_EXPIRES") or "").strip()
    if not raw:
        return MAX_LINK_EXPIRES
    if not raw.isdigit():
        raise InputError(f"SPLATFLOW_LINK_EXPIRES={raw!r} is not a whole number of seconds",
                         hint="e.g. 86400 for one day; at most 604800 (7 days); unset it for 7 days")
    return check_link_expires(int(raw), "SPLATFLOW_LINK_EXPIRES")


def temporary_credentials() -> bool:
    """True when the AWS credentials carry a session token (STS: IRSA, an instance or task role, SSO ...)."""
    if any(os.environ.get(name) for name in TEMPORARY_CREDENTIAL_ENV):
        return True
    try:
        import boto3

        creds = boto3.session.Session().get_credentials()
        return bool(creds is not None and creds.get_frozen_credentials().token)
    except Exception:  # no boto3 or no credentials: nothing signed with temporary ones
        return False


def link_for(uri: str, expires: int) -> str:
    """A URL a person can open: under SPLATFLOW_PUBLIC_BASE_URL (the address serving the bucket root: a CDN,
    a website endpoint, ``http://minio:9000/bucket``), else presigned (s3), else the URI itself."""
    base = os.environ.get("SPLATFLOW_PUBLIC_BASE_URL")
    if uri.startswith("s3://"):
        if base:
            return base.rstrip("/") + "/" + storage.parse(uri).key
        return storage.presign(uri, expires)
    return uri


def _esc(text: str) -> str:
    """Escape the three characters Slack's mrkdwn reserves (&, <, >)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Message:
    """One notification, rendered for every channel."""

    status: str
    scene: str
    title: str
    lines: list[tuple[str, str]]  # (label, value) facts
    links: list[tuple[str, str]]  # (label, url)
    error: str | None
    failed_stage: str | None

    def text(self) -> str:
        """Plain text (SNS, e-mail, the webhook's fallback ``text``)."""
        out = [self.title, ""]
        out += [f"{label}: {value}" for label, value in self.lines]
        if self.failed_stage or self.error:
            out += ["", f"Failed stage: {self.failed_stage or 'unknown'}"]
            if self.error:
                out += ["Error:", self.error]
        if self.links:
            out += ["", *[f"{label}: {url}" for label, url in self.links]]
        return "\n".join(out) + "\n"

    def slack(self) -> dict[str, Any]:
        """Slack incoming-webhook JSON: ``text`` (fallback) + ``blocks`` (header, facts, error, links)."""
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
        ]
        if self.lines:
            fields = [{"type": "mrkdwn", "text": f"*{label}*\n{_esc(value)}"[:2000]} for label, value in self.lines]
            for i in range(0, len(fields), 10):  # Slack allows 10 fields per section
                blocks.append({"type": "section", "fields": fields[i:i + 10]})
        if self.failed_stage or self.error:
            text = f"*Failed stage:* {self.failed_stage or 'unknown'}"
            if self.error:
                text += f"\n```{_esc(self.error)}```"
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
        if self.links:
            links = " · ".join(f"<{_esc(url)}|{label}>" for label, url in self.links)
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": links[:3000]}})
        return {"text": f"{_ICON.get(self.status, '')} {self.title}".strip(), "blocks": blocks}


def build_message(status: str, *, scene: str, report: dict[str, Any], failed_stage: str | None = None,
                  error: str | None = None, link_expires: int = 7 * 24 * 3600) -> Message:
    """The notification for a run. ``report`` is the run report (keys used when present: ``run_id``,
    ``summary`` (see publish.run_summary) or the same keys at the top level, ``viewer_uri``, ``manifest_uri``,
    ``content_uri``, ``urls``, ``source_uri``)."""
    summary = dict(report.get("summary") or {})
    for key in ("splats", "bytes", "ratio", "bytes_per_splat", "psnr", "ssim", "codec_psnr", "seconds",
                "total_seconds"):
        if key not in summary and key in report:
            summary[key] = report[key]
    word = {"succeeded": "published", "failed": "failed", "canceled": "canceled"}[status]
    title = f"splatflow: {scene} {word}"
    if status == "failed" and failed_stage:
        title += f" at {failed_stage}"
    lines: list[tuple[str, str]] = [("Status", status), ("Scene", scene)]
    if report.get("run_id"):
        lines.append(("Run", str(report["run_id"])))
    if "splats" in summary:
        lines.append(("Splats", f"{int(summary['splats']):,}"))
    if "bytes" in summary:
        size = _human_bytes(float(summary["bytes"]))
        if "bytes_per_splat" in summary:
            size += f" ({float(summary['bytes_per_splat']):.2f} B/splat)"
        lines.append(("Size", size))
    if "ratio" in summary:
        lines.append(("Ratio", f"{float(summary['ratio']):.1f}x"))
    if "psnr" in summary:
        lines.append(("PSNR", f"{float(summary['psnr']):.2f} dB"))
    if "ssim" in summary:
        lines.append(("SSIM", f"{float(summary['ssim']):.4f}"))
    if "codec_psnr" in summary:
        lines.append(("SOG vs PLY", f"{float(summary['codec_psnr']):.2f} dB PSNR"))
    seconds = summary.get("seconds")
    if isinstance(seconds, dict) and seconds:
        total = summary.get("total_seconds", sum(seconds.values()))
        per = ", ".join(f"{k} {_duration(v)}" for k, v in seconds.items())
        lines.append(("Time", f"{_duration(total)} ({per})"))
    if report.get("source_uri"):
        lines.append(("Source", str(report["source_uri"])))

    links: list[tuple[str, str]] = []
    urls = report.get("urls") or {}
    content = report.get("content_uri") or next((u for u in urls.values() if str(u).endswith(".sog")), None)
    public = bool(os.environ.get("SPLATFLOW_PUBLIC_BASE_URL"))
    signed = not public and any(str(u).startswith("s3://") for u in (content, report.get("manifest_uri")) if u)
    if signed and temporary_credentials():
        log.warning("links are signed with temporary credentials: they stop working when those expire")
        lines.append(("Links", "signed with temporary credentials: they stop working when those expire (often "
                               "within hours); set SPLATFLOW_PUBLIC_BASE_URL for lasting links"))
    try:
        if report.get("viewer_uri"):
            viewer = str(report["viewer_uri"])
            if viewer.startswith("s3://") and not os.environ.get("SPLATFLOW_PUBLIC_BASE_URL"):
                lines.append(("Viewer", f"{viewer} (serve the run folder over HTTP, or set "
                                        "SPLATFLOW_PUBLIC_BASE_URL, to open it in a browser)"))
            else:
                links.append(("Open the viewer", link_for(viewer, link_expires)))
        if content:
            links.append(("Download the SOG", link_for(str(content), link_expires)))
        if report.get("manifest_uri"):
            links.append(("Manifest", link_for(str(report["manifest_uri"]), link_expires)))
    except Exception as exc:  # links are a convenience: a failure to sign them must not stop the message
        log.warning("could not make links: %s", redact(str(exc)))
    err = redact(error.strip())[:_ERROR_CHARS] if error else None
    return Message(status, scene, title, lines, links, err, failed_stage if status != "succeeded" else None)


# ---------------------------------------------------------------------------- channels
def _retry(what: str, fn: Callable[[], None], *, attempts: int = 3,
           retryable: Callable[[BaseException], bool] = lambda e: True) -> None:
    for attempt in range(1, attempts + 1):
        try:
            fn()
            return
        except Exception as exc:
            if attempt == attempts or not retryable(exc):
                raise
            delay = 0.5 * 2 ** (attempt - 1)
            log.warning("%s failed (%s); retrying in %.1f s", what, redact(str(exc)) or type(exc).__name__, delay)
            time.sleep(delay)


def send_webhook(message: Message, url: str, *, timeout: float = 10.0) -> str:
    """POST the Slack-compatible JSON to ``url``; returns the channel label (host only: the URL is a secret)."""
    try:
        parsed = urlparse(url)
        usable = parsed.scheme in ("http", "https") and bool(parsed.hostname)
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        usable = False
    if not usable:
        raise InputError("SPLATFLOW_WEBHOOK_URL is not a valid http(s) URL",
                         hint="set it to the incoming-webhook URL (https://hooks.slack.com/services/...)")
    label = _webhook_label(url)
    body = json.dumps(message.slack()).encode()

    def post() -> None:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "User-Agent": "splatflow-notify"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the configured webhook
            resp.read()

    def retryable(exc: BaseException) -> bool:
        if isinstance(exc, urllib.error.HTTPError):
            return exc.code == 429 or exc.code >= 500
        return isinstance(exc, OSError)

    _retry(label, post, retryable=retryable)
    return label


def send_sns(message: Message, topic_arn: str) -> str:
    """Publish the plain-text message to an SNS topic (boto3, standard AWS environment); returns the label."""
    if not topic_arn.startswith("arn:") or ":sns:" not in topic_arn:
        raise InputError(f"{topic_arn!r} is not an SNS topic ARN", hint="use sns:arn:aws:sns:REGION:ACCOUNT:TOPIC")
    subject = "".join(c for c in message.title if 32 <= ord(c) < 127)[:100] or "splatflow"
    parts = topic_arn.split(":")  # arn:aws:sns:REGION:ACCOUNT:TOPIC: SNS answers only in the topic's region
    client = storage.client("sns", region=parts[3] if len(parts) > 5 and parts[3] else None)
    client.publish(TopicArn=topic_arn, Subject=subject, Message=message.text(),
                   MessageAttributes={"status": {"DataType": "String", "StringValue": message.status},
                                      "scene": {"DataType": "String", "StringValue": message.scene}})
    return f"sns({parts[-1]})"


@dataclass
class SmtpConfig:
    """Where and how to send e-mail (the password is read separately, only from the environment)."""

    host: str
    port: int
    security: str  # starttls | ssl | none
    user: str | None
    sender: str
    to: list[str]
    timeout: float = 20.0

    @classmethod
    def from_target(cls, target: str | None) -> SmtpConfig:
        """From ``smtp://[user@]host[:port]?to=..&from=..&security=..``, or from SPLATFLOW_SMTP_* when None."""
        if target:
            u = urlparse(target)
            q = {k: v[-1] for k, v in parse_qs(u.query).items()}
            host, port, user = u.hostname or "", u.port, unquote(u.username) if u.username else None
            if u.password:
                raise InputError("the SMTP target contains a password",
                                 hint="put the password in SPLATFLOW_SMTP_PASSWORD (a Secret), not in the target")
            security = q.get("security") or ("ssl" if u.scheme == "smtps" else None)
            sender, to = q.get("from"), q.get("to")
        else:
            host = _env("SPLATFLOW_SMTP_HOST") or ""
            raw_port = _env("SPLATFLOW_SMTP_PORT")
            port = int(raw_port) if raw_port and raw_port.isdigit() else None
            user, security = _env("SPLATFLOW_SMTP_USER"), _env("SPLATFLOW_SMTP_SECURITY")
            sender, to = _env("SPLATFLOW_SMTP_FROM"), _env("SPLATFLOW_SMTP_TO")
        if not host:
            raise InputError("no SMTP server configured", hint="set SPLATFLOW_SMTP_HOST or target smtp://host:port")
        # the default never sends a password in clear: implicit TLS on 465, else STARTTLS
        security = (security or ("ssl" if port == 465 else "starttls")).lower()
        if security not in ("starttls", "ssl", "none"):
            raise InputError(f"SMTP security {security!r} is not starttls, ssl or none", hint="pick one of the three")
        port = port or {"ssl": 465, "starttls": 587, "none": 25}[security]
        recipients = [a.strip() for a in (to or "").split(",") if a.strip()]
        if not recipients:
            raise InputError("no e-mail recipients", hint="set SPLATFLOW_SMTP_TO or ?to=a@x,b@y in the smtp target")
        return cls(host, port, security, user, sender or user or f"splatflow@{host}", recipients)


def send_smtp(message: Message, config: SmtpConfig) -> str:
    """Send the message as a plain-text e-mail (STARTTLS / implicit TLS / plain, optional AUTH)."""
    password = _env("SPLATFLOW_SMTP_PASSWORD")
    ca = _env("SPLATFLOW_SMTP_CA_FILE")
    context = ssl.create_default_context(cafile=ca) if config.security != "none" else None
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = config.sender
    mail["To"] = ", ".join(config.to)
    mail["Date"] = formatdate(localtime=False)
    mail["Message-ID"] = make_msgid(domain="splatflow")
    mail["X-Splatflow-Status"] = message.status
    mail.set_content(message.text())

    def send() -> None:
        smtp: smtplib.SMTP
        if config.security == "ssl":
            smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=context)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        with smtp:
            smtp.ehlo()
            if config.security == "starttls":
                smtp.starttls(context=context)
                smtp.ehlo()
            if config.user and password:
                smtp.login(config.user, password)
            elif config.user:
                raise InputError(f"SMTP user {config.user} is set but SPLATFLOW_SMTP_PASSWORD is not",
                                 hint="put the password in the notify Secret")
            smtp.send_message(mail)

    def retryable(exc: BaseException) -> bool:
        """Transient: dropped/refused connections, timeouts, 4xx answers. Not: auth, refusals, TLS trust."""
        if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
            return True
        if isinstance(exc, smtplib.SMTPResponseException):
            return 400 <= exc.smtp_code < 500 and not isinstance(exc, smtplib.SMTPAuthenticationError)
        if isinstance(exc, smtplib.SMTPException | ssl.SSLError | InputError):
            return False  # SMTPRecipientsRefused, SMTPNotSupportedError, certificate problems ...
        return isinstance(exc, OSError)

    _retry(f"smtp({config.host})", send, retryable=retryable)
    return f"smtp({config.host})"


# ---------------------------------------------------------------------------- stage
def _targets(target: str | None) -> list[str]:
    """The channels to use: the explicit target(s), else SPLATFLOW_NOTIFY_TARGET, else what is configured."""
    spec = (target or "").strip() or (os.environ.get("SPLATFLOW_NOTIFY_TARGET") or "").strip()
    if spec:
        return spec.split()
    found = []
    if _env("SPLATFLOW_WEBHOOK_URL") or _env("SPLATFLOW_NOTIFY_URL"):
        found.append("webhook")
    if _env("SPLATFLOW_SNS_TOPIC_ARN"):
        found.append("sns")
    if _env("SPLATFLOW_SMTP_HOST"):
        found.append("smtp")
    return found


def _plan(spec: str, message: Message) -> tuple[str, Callable[[], str]]:
    """(channel label, a function that sends) for one target; InputError for a target that cannot work."""
    if spec == "webhook":
        url = _env("SPLATFLOW_WEBHOOK_URL") or _env("SPLATFLOW_NOTIFY_URL")
        if not url:
            raise InputError("target webhook needs SPLATFLOW_WEBHOOK_URL",
                             hint="put the webhook URL in the notify Secret (it is a secret: never a parameter)")
        return _webhook_label(url), lambda: send_webhook(message, url)
    if spec == "sns" or spec.startswith("sns:"):
        arn = spec[4:] if spec.startswith("sns:") else _env("SPLATFLOW_SNS_TOPIC_ARN")
        if not arn:
            raise InputError("target sns needs a topic", hint="use sns:<topic ARN> or set SPLATFLOW_SNS_TOPIC_ARN")
        return f"sns({arn.split(':')[-1]})", lambda: send_sns(message, arn)
    if spec == "smtp" or spec.startswith(("smtp://", "smtps://")):
        config = SmtpConfig.from_target(None if spec == "smtp" else spec)
        return f"smtp({config.host})", lambda: send_smtp(message, config)
    if spec.startswith(("http://", "https://")):
        raise InputError("a webhook URL was given as the notify target",
                         hint="webhook URLs are secrets: put it in SPLATFLOW_WEBHOOK_URL and use target 'webhook'")
    raise InputError(f"unknown notify target {spec!r}",
                     hint="use webhook, sns:<topic ARN>, smtp://host:port?to=..., or none")


def _webhook_label(url: str) -> str:
    """``webhook(<host>)``: the only part of a webhook URL that is not secret (split by hand: never raises)."""
    host = re.match(r"^(\[[^\]]*\]?|[^:]*)", url_parts(url)["host"]).group(1)  # type: ignore[union-attr]
    return f"webhook({host})" if "://" in url and host else "webhook"


def _kind(spec: str) -> str:
    """A label for a target that could not even be set up (never the target text: it may be a URL)."""
    for kind in ("webhook", "sns", "smtp"):
        if spec.startswith(kind):
            return kind
    return "target"


def send(status: str, *, scene: str, report: dict, target: str | None = None, failed_stage: str | None = None,
           error: str | None = None, strict: bool | None = None, link_expires: int | None = None) -> dict:
    """Send the run's outcome to ``target`` (see the module docstring).

    Returns ``delivered`` (True when every channel took the message; False when none is configured),
    ``channel`` (the channels, by label, e.g. ``webhook(hooks.slack.com) sns(topic)``), ``channels`` (label ->
    ``{"delivered": bool, "error": str}``), ``status``. Raises NotifyError on a failed delivery only if
    ``strict`` (default ``SPLATFLOW_NOTIFY_STRICT=1``).
    """
    norm = STATUSES.get(str(status).strip().lower())
    if norm is None:
        raise InputError(f"unknown run status {status!r}", hint="use succeeded, failed or canceled")
    if strict is None:
        strict = os.environ.get("SPLATFLOW_NOTIFY_STRICT", "").strip().lower() in ("1", "true", "yes")
    link_expires = link_expires_from_env() if link_expires is None else check_link_expires(link_expires)
    result: dict[str, Any] = {"status": norm, "delivered": False, "channel": "none", "channels": {}}
    try:
        specs = _targets(target)
    except InputError as exc:  # e.g. a *_FILE secret that is not mounted: reported like a failed delivery
        specs = ["invalid-config"]
        setup_error: InputError | None = exc
    else:
        setup_error = None
    if specs == ["none"] or not specs:
        log.info("no notification target configured; nothing sent")
        return result
    message = build_message(norm, scene=scene, report=report, failed_stage=failed_stage, error=error,
                            link_expires=link_expires)
    failures = []
    for spec in specs:
        label = _kind(spec)
        try:
            if setup_error is not None:
                raise setup_error
            label, send = _plan(spec, message)
            send()
            result["channels"][label] = {"delivered": True}
            log.info("notification sent via %s", label)
        except Exception as exc:
            detail = redact(f"{type(exc).__name__}: {exc}")
            result["channels"][label] = {"delivered": False, "error": detail}
            failures.append(f"{label}: {detail}")
            log.error("notification via %s failed: %s", label, detail)
    result["channel"] = " ".join(result["channels"])
    result["delivered"] = not failures
    if failures and strict:
        raise NotifyError(f"notification failed: {'; '.join(failures)}",
                          hint="check the notify target and Secret; unset SPLATFLOW_NOTIFY_STRICT to only log this")
    return result


# ---------------------------------------------------------------------------- the pipeline's exit task
# KFP's final states (PipelineTaskFinalStatus.state) -> the status words notify takes.
_KFP_STATES = {"SUCCEEDED": "succeeded", "FAILED": "failed", "CANCELED": "canceled", "CANCELLED": "canceled"}


def final_status(state: str | None, error_message: str | None, task_name: str | None) -> dict[str, Any]:
    """KFP's final status as notify's ``status`` and ``error`` (an unknown state is never called a success).

    KFP reports the exit handler's group, not the stage inside it that failed: the stage comes from the record
    it left (:func:`splatflow.tasks.read_failure`); this error is what KFP itself says.
    """
    status = _KFP_STATES.get((state or "").strip().upper(), "failed")
    if status == "succeeded":
        return {"status": status, "error": None}
    detail = (error_message or "").strip() or f"pipeline task {task_name or '?'} ended in state {state or '?'}"
    return {"status": status, "error": detail}


def notify(state: str | None, *, error_message: str | None, task_name: str | None, source_uri: str,
               output_uri: str, run_id: str, target: str | None = None) -> dict[str, Any]:
    """Notify the outcome of pipeline run ``run_id`` (what the pipeline's exit task does).

    On success the message carries what publish wrote (read back from its manifest); on failure the stage that
    failed and its one-line error (the record the stage left), else KFP's error. When the storage cannot be
    read, that is logged and the message goes out with what is known. Returns :func:`send`'s result plus
    ``scene`` and, on a recorded failure, ``failed_stage``.
    """
    from splatflow.stages.publish import published_run, scene_name
    from splatflow.tasks import error_line, read_failure

    outcome = final_status(state, error_message, task_name)
    scene = scene_name(source_uri)
    report: dict[str, Any] = {"scene": scene, "run_id": run_id, "source_uri": source_uri, "output_uri": output_uri}
    failed_stage, error = None, outcome["error"]
    if outcome["status"] == "succeeded":
        try:
            report.update(published_run(output_uri, scene, run_id) or {})
        except Exception as exc:  # storage down: the outcome still goes out, without links
            log.warning("could not read what publish wrote (%s); notifying without it", error_line(exc))
    elif outcome["status"] == "failed":
        try:
            failure = read_failure(output_uri, run_id)
        except Exception as exc:
            log.warning("could not read which stage failed (%s); notifying KFP's error", error_line(exc))
            failure = None
        if failure:
            failed_stage, error = failure["stage"], failure["error"]
    result = send(outcome["status"], scene=scene, report=report, target=target or None,
                    failed_stage=failed_stage, error=error)
    result["scene"] = scene
    if failed_stage:
        result["failed_stage"] = failed_stage
    return result


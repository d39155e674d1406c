"""`make upload` / `make run-pipeline` (python -m splatflow_kfp.pipelines) against a local HTTP server speaking KFP
v2beta1 REST.

The server records every call (method, path, query, auth headers, body), so the tests check what kfp.Client
really sends: the compiled YAML, the run's parameters and version, the namespace, and the auth on every request.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from splatflow_kfp.pipelines.__main__ import main

API = "/apis/v2beta1"


@dataclass
class FakeKfp:
    """In-memory KFP API state plus the log of calls."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_states: list[str] = field(default_factory=lambda: ["RUNNING", "SUCCEEDED"])
    url: str = ""
    deny: int = 0  # answer every request with this HTTP status (401, 403 ...)
    login_page: bool = False  # answer every request with an HTML login page (oauth2-proxy without a session)

    def paths(self) -> list[str]:
        return [f"{c['method']} {c['path']}" for c in self.calls]


def _handler(state: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def _reply(self, body: dict[str, Any], status: int = 200) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> tuple[str, dict[str, list[str]], bytes]:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            query = parse_qs(url.query)
            state.calls.append({"method": self.command, "path": url.path, "query": query, "body": body,
                                "authorization": self.headers.get("Authorization"),
                                "cookie": self.headers.get("Cookie")})
            return url.path, query, body

        def _refuse(self) -> bool:
            if state.login_page:
                data = b"<html><body>Sign in to Kubeflow</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return True
            if state.deny:
                self._reply({"error": "access denied", "code": 16, "message": "access denied"}, state.deny)
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802
            path, query, _ = self._record()
            if self._refuse():
                return
            if path == f"{API}/healthz":
                return self._reply({"multi_user": False})
            if path == f"{API}/pipelines":
                pred = json.loads(query["filter"][0])["predicates"][0] if "filter" in query else {}
                wanted = pred.get("string_value", pred.get("stringValue"))  # proto JSON accepts both spellings
                found = [p for p in state.pipelines.values() if wanted in (None, p["display_name"])]
                return self._reply({"pipelines": found, "total_size": len(found)} if found else {})
            if path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
                pid = path.split("/")[-2]
                return self._reply({"pipeline_versions": list(reversed(state.versions.get(pid, [])))})
            if path == f"{API}/experiments":
                return self._reply({"experiments": state.experiments} if state.experiments else {})
            if path.startswith(f"{API}/runs/"):
                run = state.runs[path.rsplit("/", 1)[1]]
                run["state"] = state.run_states.pop(0) if len(state.run_states) > 1 else state.run_states[0]
                return self._reply(run)
            return self._reply({"error": f"unexpected GET {path}"}, 404)

        def do_POST(self) -> None:  # noqa: N802
            path, query, body = self._record()
            if self._refuse():
                return
            if path == f"{API}/pipelines/upload":
                assert b"pipelineInfo" in body  # the multipart upload carries the compiled YAML
                pid = f"p{len(state.pipelines) + 1}"
                state.pipelines[pid] = {"pipeline_id": pid, "display_name": query["name"][0]}
                state.versions[pid] = [{"pipeline_id": pid, "pipeline_version_id": f"{pid}-v1",
                                        "display_name": query["name"][0]}]
                return self._reply(state.pipelines[pid])
            if path == f"{API}/pipelines/upload_version":
                assert b"pipelineInfo" in body
                pid = query["pipelineid"][0]
                version = {"pipeline_id": pid, "pipeline_version_id": f"{pid}-v{len(state.versions[pid]) + 1}",
                           "display_name": query["name"][0]}
                state.versions[pid].append(version)
                return self._reply(version)
            if path == f"{API}/experiments":
                exp = {**json.loads(body), "experiment_id": f"e{len(state.experiments) + 1}"}
                state.experiments.append(exp)
                return self._reply(exp)
            if path == f"{API}/runs":
                run = {**json.loads(body), "run_id": f"r{len(state.runs) + 1}", "state": "PENDING"}
                state.runs[run["run_id"]] = run
                return self._reply(run)
            return self._reply({"error": f"unexpected POST {path}"}, 404)

    return Handler


@pytest.fixture
def kfp_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeKfp]:
    state = FakeKfp()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("KFP_TOKEN", "KFP_COOKIE", "KFP_NAMESPACE", "KFP_SA_TOKEN_PATH", "KFP_EXPERIMENT",
                 "KFP_SERVICE_ACCOUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KFP_HOST", state.url)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/kfp/context.json from the developer's machine
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, compiled_yaml: str) -> Path:
    path = tmp_path_factory.mktemp("pkg") / "pipeline.yaml"
    path.write_text(compiled_yaml)
    return path


def _params(tmp_path: Path, suffix: str = ".yaml", **extra: Any) -> Path:
    params = {"source_uri": "s3://in/photos/Lund Cathedral/", "output_uri": "s3://out/scenes", "quality": "preview",
              "max_splats": 200000, **extra}
    path = tmp_path / f"params{suffix}"
    path.write_text(json.dumps(params) if suffix == ".json" else yaml.safe_dump(params))
    return path


def test_run_pipeline_with_a_token_uploads_then_runs(kfp_server: FakeKfp, package: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KFP_TOKEN", "tok-123-secret")
    monkeypatch.setenv("KFP_SERVICE_ACCOUNT", "pipeline-runner")
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path)), "--version", "v-test"]) == 0
    assert kfp_server.paths() == [
        f"GET {API}/healthz",                # kfp.Client: multi-user? (asked only when no namespace is given)
        f"GET {API}/pipelines",              # is there a pipeline named splatflow? no
        f"POST {API}/pipelines/upload",      # create it (KFP gives it a first version named after it)
        f"POST {API}/pipelines/upload_version",  # the version asked for: --version is not ignored
        f"GET {API}/experiments",            # experiment splatflow? no
        f"POST {API}/experiments",
        f"POST {API}/runs",
    ]
    assert {c["authorization"] for c in kfp_server.calls} == {"Bearer tok-123-secret"}
    assert kfp_server.calls[2]["query"]["name"] == ["splatflow"]
    assert kfp_server.calls[3]["query"] == {"name": ["v-test"], "pipelineid": ["p1"]}
    run = json.loads(kfp_server.calls[-1]["body"])
    assert run["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "p1-v2"}
    assert run["runtime_config"]["parameters"] == {"source_uri": "s3://in/photos/Lund Cathedral/",
                                                   "output_uri": "s3://out/scenes", "quality": "preview",
                                                   "max_splats": 200000}
    assert run["service_account"] == "pipeline-runner"
    assert run["experiment_id"] == "e1"
    assert json.loads(kfp_server.calls[5]["body"])["display_name"] == "splatflow"
    out = capsys.readouterr()
    printed = json.loads(out.out[out.out.index("{"):])
    assert printed["run_id"] == "r1"
    assert printed["run_url"] == f"{kfp_server.url}/#/runs/details/r1"
    assert printed["output_prefix"] == "s3://out/scenes/lund-cathedral/r1/"
    assert printed["pipeline_version"] == "v-test"
    assert "tok-123-secret" not in out.out + out.err

    # a second run: a new version of the same pipeline, the existing experiment
    kfp_server.calls.clear()
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path, ".json")),
                 "--version", "v-second"]) == 0
    assert kfp_server.paths() == [f"GET {API}/healthz", f"GET {API}/pipelines",
                                  f"POST {API}/pipelines/upload_version", f"GET {API}/experiments",
                                  f"POST {API}/runs"]
    assert kfp_server.calls[2]["query"] == {"name": ["v-second"], "pipelineid": ["p1"]}
    run = json.loads(kfp_server.calls[-1]["body"])
    assert run["pipeline_version_reference"] == {"pipeline_id": "p1", "pipeline_version_id": "p1-v3"}


def test_upload_and_wait_with_cookie_auth_in_a_profile_namespace(kfp_server: FakeKfp, package: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KFP_COOKIE", "oauth2_proxy_kubeflow=cookie-abc")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    monkeypatch.setenv("KFP_EXPERIMENT", "scans")
    assert main(["upload", "--package", str(package)]) == 0
    assert kfp_server.paths() == [f"GET {API}/pipelines", f"POST {API}/pipelines/upload",
                                  f"POST {API}/pipelines/upload_version"]
    assert kfp_server.calls[0]["query"]["namespace"] == ["team-a"]
    assert kfp_server.calls[1]["query"]["namespace"] == ["team-a"]
    assert {c["cookie"] for c in kfp_server.calls} == {"oauth2_proxy_kubeflow=cookie-abc"}
    assert {c["authorization"] for c in kfp_server.calls} == {None}

    kfp_server.calls.clear()
    kfp_server.run_states = ["PENDING", "RUNNING", "SUCCEEDED"]
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path)), "--wait",
                 "--poll", "0.01"]) == 0
    assert kfp_server.paths()[:2] == [f"GET {API}/pipelines", f"POST {API}/pipelines/upload_version"]
    assert kfp_server.paths().count(f"GET {API}/runs/r1") == 3
    exp = json.loads(next(c["body"] for c in kfp_server.calls if c["path"] == f"{API}/experiments"
                          and c["method"] == "POST"))
    assert exp == {"display_name": "scans", "namespace": "team-a"}
    out = capsys.readouterr().out
    assert "run r1 finished: SUCCEEDED" in out
    assert "cookie-abc" not in out


def test_a_failed_run_exits_4(kfp_server: FakeKfp, package: Path, tmp_path: Path) -> None:
    kfp_server.run_states = ["RUNNING", "FAILED"]
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path)), "--wait",
                 "--poll", "0.01"]) == 4


def test_bad_parameters_fail_before_anything_is_uploaded(kfp_server: FakeKfp, package: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path, aws_secret="x"))]) == 2
    err = capsys.readouterr().err
    assert "unknown pipeline parameter(s) aws_secret" in err and "hint:" in err
    missing = tmp_path / "missing.yaml"
    missing.write_text("quality: high\n")
    assert main(["run", "--package", str(package), "--params", str(missing)]) == 2
    assert "missing required pipeline parameter(s) output_uri, source_uri" in capsys.readouterr().err
    assert kfp_server.calls == []


def test_without_kfp_host_it_says_what_to_set(package: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert main(["upload", "--package", str(package)]) == 3
    assert "KFP_HOST is not set" in capsys.readouterr().err


def test_missing_package_says_to_compile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--package", str(tmp_path / "nope.yaml")]) == 2
    assert "make compile" in capsys.readouterr().err


def test_two_pipelines_with_the_same_name_are_refused(kfp_server: FakeKfp, package: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for pid in ("a", "b"):
        kfp_server.pipelines[pid] = {"pipeline_id": pid, "display_name": "splatflow"}
    assert main(["upload", "--package", str(package)]) == 2
    assert "2 pipelines are named 'splatflow'" in capsys.readouterr().err
    assert not [c for c in kfp_server.calls if c["method"] == "POST"]


def test_first_upload_uses_the_version_and_leaves_other_pipelines_alone(kfp_server: FakeKfp, package: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    kfp_server.pipelines["x1"] = {"pipeline_id": "x1", "display_name": "someone-elses-pipeline"}
    kfp_server.versions["x1"] = [{"pipeline_id": "x1", "pipeline_version_id": "x1-v1", "display_name": "x"}]
    assert main(["upload", "--package", str(package), "--version", "v-first"]) == 0
    listing = next(c for c in kfp_server.calls if c["path"] == f"{API}/pipelines")
    pred = json.loads(listing["query"]["filter"][0])["predicates"][0]
    assert pred["key"] == "display_name" and pred.get("stringValue", pred.get("string_value")) == "splatflow"
    # a new pipeline, then the named version on it; nothing was added to the unrelated pipeline
    assert [c["path"] for c in kfp_server.calls if c["method"] == "POST"] == [f"{API}/pipelines/upload",
                                                                          f"{API}/pipelines/upload_version"]
    assert kfp_server.calls[-1]["query"] == {"name": ["v-first"], "pipelineid": ["p2"]}
    assert len(kfp_server.versions["x1"]) == 1
    out = capsys.readouterr().out
    assert "version v-first (p2-v2)" in out and "created pipeline p2" in out


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_host_is_one_line_and_exit_3(package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KFP_HOST", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("KFP_TOKEN", "KFP_COOKIE", "KFP_NAMESPACE", "KFP_SA_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert main(["upload", "--package", str(package)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach KFP at http://127.0.0.1:") and "hint: check KFP_HOST" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize(("status", "auth", "said", "fix"), [
    (401, "KFP_TOKEN", "refused the credentials (HTTP 401, auth: token): access denied", "KFP_TOKEN is expired"),
    (403, "KFP_COOKIE", "denied access (HTTP 403, auth: cookie): access denied", "log in to Kubeflow again"),
])
def test_refused_credentials_say_which_and_exit_3(kfp_server: FakeKfp, package: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                  status: int, auth: str, said: str, fix: str) -> None:
    monkeypatch.setenv(auth, "secret-value-9f8e7d")
    monkeypatch.setenv("KFP_NAMESPACE", "team-a")
    kfp_server.deny = status
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path)), "--wait"]) == 3
    err = capsys.readouterr().err
    assert f"error: KFP at {kfp_server.url} {said}" in err and fix in err
    assert "secret-value-9f8e7d" not in err and "Traceback" not in err
    assert not [c for c in kfp_server.calls if c["method"] == "POST"]


def test_a_login_page_instead_of_the_api_is_named(kfp_server: FakeKfp, package: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    kfp_server.login_page = True  # oauth2-proxy answers 200 with HTML: kfp.Client reads it as empty answers
    assert main(["upload", "--package", str(package)]) == 3
    err = capsys.readouterr().err
    assert "did not answer like the KFP API" in err and "KFP_COOKIE" in err


def test_a_wait_timeout_exits_4_and_says_the_run_goes_on(kfp_server: FakeKfp, package: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    kfp_server.run_states = ["RUNNING"]
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path)), "--wait",
                 "--timeout", "0.05", "--poll", "0.01"]) == 4
    out = capsys.readouterr()
    assert "run r1 has not finished after --timeout 0 s (still RUNNING); it keeps running in KFP" in out.err
    assert "--timeout" in out.err.split("hint:")[1] and "Traceback" not in out.err
    assert '"run_url"' in out.out  # printed before waiting, so the run can be followed


@pytest.mark.parametrize(("extra", "said"), [
    ({"quality": "ultra"}, "quality 'ultra' is not one of: tiny, cpu, preview, standard, high"),
    ({"sh_degree": 4}, "sh_degree 4 is out of range"),
    ({"sh_degree": "2"}, "sh_degree must be a whole number from 0 to 3, got '2'"),
    ({"max_splats": 0}, "max_splats 0 is out of range"),
    ({"iterations": -1}, "iterations -1 is out of range"),
    ({"target_psnr": 5}, "target_psnr 5 dB is out of range"),
    ({"qualty": "cpu"}, "unknown pipeline parameter(s) qualty"),
    ({"source_uri": ""}, "source_uri is empty"),
    ({"output_uri": "  "}, "output_uri is empty"),
    ({"output_uri": "gs://bucket/out"}, "output_uri: unsupported storage URI"),
    ({"notify_target": "https://hooks.example.com/services/T0/B0/tok"}, "notify_target holds a URL"),
])
def test_parameter_values_are_checked_before_anything_is_uploaded(kfp_server: FakeKfp, package: Path,
                                                                  tmp_path: Path, extra: dict[str, Any], said: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--package", str(package), "--params", str(_params(tmp_path, **extra))]) == 2
    err = capsys.readouterr().err
    assert said in err and "hint:" in err
    assert "/tok" not in err  # a URL given by mistake is not echoed
    assert kfp_server.calls == []

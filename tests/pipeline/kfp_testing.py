"""Constants shared by the pipeline tests (a module, not conftest, so tests can import it by name)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN_REGISTRY = "registry.example.com/splatflow"
GOLDEN_TAG = "golden"
# Secret-looking values present in the compiler's environment: none may reach the compiled YAML.
FAKE_SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEACCESSKEY1234",
    "AWS_SECRET_ACCESS_KEY": "fake/secret+access-key-4f9c2e7a",
    "SPLATFLOW_WEBHOOK_URL": "https://hooks.example.com/services/T000/B000/fakewebhooktoken",
    "SPLATFLOW_SMTP_PASSWORD": "fake-smtp-password-8d1e",
    "KFP_TOKEN": "fake-kfp-bearer-token-77aa",
    "KFP_COOKIE": "oauth2_proxy_kubeflow=fake-cookie-value-5b5b",
}

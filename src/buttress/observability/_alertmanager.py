"""
An example Alertmanager configuration for the generated buttress alerts.

Routes by ``severity`` (critical pages through Slack and a generic webhook, warning opens an
email ticket), groups by job and target, inhibits the symptoms of an open breaker
(ButtressHighFailureRate and ButtressRetryStorm of the same target) while ButtressCircuitOpen
fires, and repeats slowly so a long incident does not flood anyone. Secrets are never inline:
every credential is a ``*_file`` path to mount.
"""

from __future__ import annotations

from typing import Any

ALERTMANAGER_FILE = "alertmanager.yml"
INHIBITING_ALERT = "ButtressCircuitOpen"
INHIBITED_ALERTS: tuple[str, ...] = ("ButtressHighFailureRate", "ButtressRetryStorm")
EQUAL_LABELS: tuple[str, ...] = ("job", "target", "kind")
SECRETS_DIR = "/etc/alertmanager/secrets"

RECEIVER_BY_SEVERITY = {"critical": "buttress-critical", "warning": "buttress-warning"}
DEFAULT_RECEIVER = "buttress-default"


def _bearer(secret: str) -> dict[str, Any]:
    """A webhook's credentials, read from a mounted file (Alertmanager 0.25 has no url_file)."""
    return {"authorization": {"type": "Bearer", "credentials_file": f"{SECRETS_DIR}/{secret}"}}


def config() -> dict[str, Any]:
    """
    The Alertmanager configuration, as a dict for :func:`buttress.observability._yaml.dump`.

    .. versionadded:: 0.1.0
    """
    return {
        "global": {
            "resolve_timeout": "5m",
            "smtp_smarthost": "smtp.example.com:587",
            "smtp_from": "alertmanager@example.com",
            "smtp_auth_username": "alertmanager@example.com",
            "smtp_auth_password_file": f"{SECRETS_DIR}/smtp-password",
            "smtp_require_tls": True,
            "slack_api_url_file": f"{SECRETS_DIR}/slack-webhook-url",
        },
        "route": {
            "receiver": DEFAULT_RECEIVER,
            "group_by": ["alertname", "job", "target"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "12h",
            "routes": [
                {
                    "matchers": ['alertname=~"Buttress.+"', 'severity="critical"'],
                    "receiver": RECEIVER_BY_SEVERITY["critical"],
                    "repeat_interval": "2h",
                },
                {
                    "matchers": ['alertname=~"Buttress.+"', 'severity="warning"'],
                    "receiver": RECEIVER_BY_SEVERITY["warning"],
                    "group_interval": "15m",
                    "repeat_interval": "24h",
                },
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'alertname="{INHIBITING_ALERT}"'],
                "target_matchers": [f'alertname=~"{"|".join(INHIBITED_ALERTS)}"'],
                "equal": list(EQUAL_LABELS),
            }
        ],
        "receivers": [
            {
                "name": RECEIVER_BY_SEVERITY["critical"],
                "slack_configs": [
                    {
                        "channel": "#oncall",
                        "send_resolved": True,
                        "title": "{{ .CommonAnnotations.summary }}",
                        "text": "{{ range .Alerts }}{{ .Annotations.description }}\n"
                        "Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
                    }
                ],
                "webhook_configs": [
                    {
                        "url": "https://pager.example.com/hooks/buttress",
                        "http_config": _bearer("pager-token"),
                        "send_resolved": True,
                        "max_alerts": 20,
                    }
                ],
            },
            {
                "name": RECEIVER_BY_SEVERITY["warning"],
                "email_configs": [{"to": "team@example.com", "send_resolved": False}],
                "slack_configs": [{"channel": "#alerts", "send_resolved": True}],
            },
            {
                "name": DEFAULT_RECEIVER,
                "webhook_configs": [
                    {
                        "url": "https://hooks.example.com/alertmanager",
                        "http_config": _bearer("webhook-token"),
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }

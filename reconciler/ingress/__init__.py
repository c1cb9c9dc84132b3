"""How events get in: the HTTP API (Keptn's `POST /v1/event`), the Alertmanager webhook, the inbox."""

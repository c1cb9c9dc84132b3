"""How events get in: the shell around `core.admission` for the CLI, the inbox directory, the
Alertmanager webhook's payloads and approval files (the HTTP routes are `reconciler.api`)."""

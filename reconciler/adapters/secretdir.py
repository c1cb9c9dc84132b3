"""Secrets kept as files, `<root>/<secret>/<key>`: the layout of a Kubernetes Secret mounted as a volume.

The local runner already reads job secrets from `<data_dir>/secrets/` this way; webhooks
read their `envFrom` references from the same store, so one directory (or one mounted
Secret per name) serves both. Names are checked before they become paths, so a reference
cannot leave the root; a key's symlinks (how kubelet lays a Secret out) may point inside
it. Every value read is registered for redaction at once.

May import: stdlib, `reconciler.formats`, `reconciler.base.redact`.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.base.redact import register_secrets
from reconciler.formats.webhook import SECRET_KEY, SECRET_NAME, SecretRef

MAX_SECRET_BYTES = 64 * 1024


class DirectorySecrets:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def read(self, name: str, key: str) -> str | None:
        """The value of `key` in secret `name` (one trailing newline dropped), None when absent."""
        if not SECRET_NAME.match(name) or not SECRET_KEY.match(key) or key.startswith(".."):
            return None
        root = self.root.resolve()
        path = (root / name / key).resolve()
        if root not in path.parents or not path.is_file():
            return None
        data = path.read_bytes()[: MAX_SECRET_BYTES + 1]
        if len(data) > MAX_SECRET_BYTES:
            return None
        value = data.decode("utf-8", errors="replace")
        value = value[:-1] if value.endswith("\n") else value
        register_secrets([value])
        return value

    def lookup(self, env_name: str, ref: SecretRef) -> str | None:
        """A `SecretLookup` for `reconciler.core.webhookrender`."""
        return self.read(ref.name, ref.key)

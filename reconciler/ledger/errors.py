"""What can go wrong with a ledger, as exceptions a command can turn into one line.

Every message names the ledger (its path), what is wrong and where (a commit, an
object file, a ref), and what to do about it; secrets are redacted before they get
here. `reconciler events` and `reconciler run` print `str(exc)` and exit non-zero,
so a message must stand on its own. May import: the standard library.
"""

from __future__ import annotations


class LedgerError(RuntimeError):
    """The ledger cannot be written or read; the message says why (secrets redacted)."""


class LedgerDamaged(LedgerError):
    """What is on disk is not a readable ledger: a damaged object, a vanished or rewound branch."""


class LedgerRefused(LedgerError):
    """History from elsewhere (the upstream's copy) that this ledger will not adopt.

    `commit` is the first offending commit, `problem` what is wrong with it.
    """

    def __init__(self, message: str, *, commit: str, problem: str) -> None:
        super().__init__(message)
        self.commit = commit
        self.problem = problem

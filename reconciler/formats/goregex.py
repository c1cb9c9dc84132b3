"""Go's regular expressions (RE2) for job-executor event names.

job-executor-service matched `events[].name` with Go's `regexp`, an RE2 engine: linear
time, no backreferences or lookarounds. Python's `re` accepts more and can backtrack
exponentially on a hostile pattern (a job config is upstream input), so we use Google's
RE2 through `google-re2` — the same syntax and the same guarantee as Keptn. If the wheel
is missing on a platform we fall back to `re` with a bound on the pattern length.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

MAX_PATTERN_CHARS = 512

try:  # pragma: no branch - the wheel exists for the platforms we ship
    import re2 as _re2

    _OPTIONS: Any = _re2.Options()
    _OPTIONS.log_errors = False  # errors are ours to report, not absl's to print on stderr
    ENGINE = "re2"
except ImportError:  # pragma: no cover
    _re2 = None
    ENGINE = "re"


class PatternError(ValueError):
    pass


@lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"pattern is {len(pattern)} characters; expected at most {MAX_PATTERN_CHARS}")
    try:
        if _re2 is not None:
            return _re2.compile(pattern, _OPTIONS)
        return re.compile(pattern)
    except Exception as exc:  # re2.error / re.error
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternError(f"not a valid Go (RE2) regular expression: {detail}") from None


def search(pattern: str, text: str) -> bool:
    """Unanchored search, as Go's `regexp.MatchString`; an invalid pattern never matches."""
    try:
        return compile_pattern(pattern).search(text) is not None
    except PatternError:
        return False

"""The per-target caches behind activation stay bounded however many targets a service calls.

A webhook sender or a crawler calls a new host on almost every request. The registry folds
targets past its cap into ``other``; the option caches read on every request must not keep one
entry per host ever seen either.
"""

from __future__ import annotations

import logging

from buttress import _activation
from buttress.integrations import _http


def test_option_caches_stay_bounded_over_many_targets(caplog) -> None:
    """Ten thousand distinct hosts: each cache holds at most _MAX_CACHED entries."""
    caplog.set_level(logging.ERROR, logger="buttress")  # the registry's over-the-cap warning
    limit = _activation._MAX_CACHED
    try:
        for i in range(limit + 1000):
            target = f"host{i}.example:443"
            _http.route(target)
            _activation.db_options(target)
            _activation.llm_tokens(target)

        sizes = (
            len(_activation._http_options),
            len(_activation._db_options),
            len(_activation._llm_tokens),
        )
        assert all(0 < size <= limit for size in sizes), sizes
        # Still correct after a restart of the cache: the same answer as a fresh lookup.
        assert _http.route("host3.example:443").methods == _http.route("host9.example:443").methods
    finally:
        _activation.deactivate()
        _http.forget_routes()

"""`python -m gateway` caps glibc's malloc arenas unless the operator chose."""
from __future__ import annotations

from gateway.__main__ import limit_malloc_arenas


def test_the_arena_cap_is_set_through_glibc():  # Debian's libc: mallopt answers 1 when it took the cap
    assert limit_malloc_arenas({}) is True


def test_an_operators_malloc_arena_max_is_left_alone():
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "4"}) is False

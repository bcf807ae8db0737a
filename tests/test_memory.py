"""The process's memory policy (bot.conversation.memory): full collections spaced out under load."""

from __future__ import annotations

import subprocess
import sys

from bot.conversation.memory import can_trim, system_malloc_argv

# A fresh interpreter (so the old generation is small, as in a bot just started) keeps 300 000
# new objects alive, as a ramp of new calls does, and counts the full collections meanwhile.
GROWING_HEAP = """
import gc, sys
from bot.conversation.memory import collect_fully_less_often
if sys.argv[1] == "ours":
    collect_fully_less_often()
full = []
gc.callbacks.append(lambda phase, info: phase == "start" and full.append(info["generation"] == 2))
kept = [[[] for _ in range(1000)] for _ in range(300)]
print(sum(full))
"""


def full_collections(policy: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", GROWING_HEAP, policy], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def test_a_growing_heap_is_not_walked_again_and_again():
    assert full_collections("default") >= 2  # Python's own thresholds: measured 3
    assert full_collections("ours") == 0


def test_the_server_reruns_itself_on_glibc_malloc_unless_told_otherwise():
    assert system_malloc_argv({"PYTHONMALLOC": "pymalloc"}) is None  # the operator's choice
    assert system_malloc_argv({"PYTHONMALLOC": "malloc"}) is None  # no second re-run
    argv = system_malloc_argv({})
    if can_trim():
        assert argv == [sys.executable, *sys.orig_argv[1:]]
    else:
        assert argv is None

"""The command line: ``python -m bot serve | demo | call | doctor | report | cluster``.

Owns: argument parsing and each command's top level, and the local cluster
(``bot.cli.cluster``: Redis, N instances and HAProxy as child processes). It is the top room:
it may import every other room (the demo and ``call`` use the simulator and the test kit);
nothing imports it but ``bot/__main__.py``, and the cluster tests and bench, which drive
``bot.cli.cluster``. It must not hold logic another room needs: a command reads its arguments
and calls into the room that does the work.
"""

from bot.cli.main import main

__all__ = ["main"]

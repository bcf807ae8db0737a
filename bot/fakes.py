"""``python -m bot.fakes``: the fake cloud providers of the test kit (bot.testing), kept at
their old address for the README's command and for scripts that import ``bot.fakes``."""

from bot.testing import *  # noqa: F403
from bot.testing.fakes.cli import main

if __name__ == "__main__":
    main()

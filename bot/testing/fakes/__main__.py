"""``python -m bot.testing.fakes``: the same CLI as ``python -m bot.fakes``."""

from bot.testing.fakes.cli import main

if __name__ == "__main__":
    main()

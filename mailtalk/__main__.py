"""``python -m mailtalk``."""

from mailtalk.cli import main

main()

"""``python -m mailtalk``, and the ``mailtalk`` script (``mailtalk.__main__:main``)."""

import gc


def main() -> None:
    # No garbage collection while the command line and the command's module load:
    # tens of thousands of objects (click, the options) that live as long as the
    # process, walked by 20 collections for nothing. The root group freezes them and
    # turns collection on again before the command runs (mailtalk.cli.cli); --version
    # and --help end before.
    gc.disable()
    from mailtalk.cli import main as run

    run()


if __name__ == "__main__":
    main()

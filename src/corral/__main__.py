"""``python -m corral``: the `corral` command, for child processes started with this interpreter."""

from corral.cli import main

if __name__ == "__main__":
    main()

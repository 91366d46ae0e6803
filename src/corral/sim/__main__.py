"""``python -m corral.sim run|sweep``: the same commands as ``corral sim``."""

from corral.sim.cli import main

if __name__ == "__main__":
    main(prog_name="python -m corral.sim")

"""`python -m adgen` is the `adgen` command."""
from adgen.cli import run

if __name__ == "__main__":
    run()

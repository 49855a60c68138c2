"""`python -m snnbackdoor ...`: the same command line as the `snnbackdoor` script."""

from .cli import main

main()

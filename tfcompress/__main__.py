"""`python -m tfcompress` is the `tfcompress` command."""

from tfcompress.cli import run_main

run_main()

"""``python -m pipeline``: the pipeline's command line."""

from pipeline.cli import main

main()

"""Command-line entry points (``cli/<name>.py:main(argv=None) -> int``)."""

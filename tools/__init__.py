"""Tooling around the course (see tools/cli.py); tutorlib is what the notebooks import."""

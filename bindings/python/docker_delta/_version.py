"""The package's version: the docker-delta release whose library the wheel carries."""

__version__ = "0.1.0"

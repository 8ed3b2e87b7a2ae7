"""The version of vggnet: one source, read by the package and by pyproject.toml."""

__version__ = "0.1.0"

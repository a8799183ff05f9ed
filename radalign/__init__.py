"""RadAlign Stream: the library package that every service shares."""

__version__ = "0.1.0"
PIPELINE_VERSION = f"radalign-{__version__}"

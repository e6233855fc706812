"""sashimi-study: S4 / SaShiMi raw-audio music generation, reproducible studies, reports."""

__version__ = "0.1.0"

"""heygem-launch: the HeyGem container's entrypoint, which refuses to start on CPU fallback."""

__version__ = "0.1.0"

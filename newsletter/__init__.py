"""A daily email bulletin: articles in, one inline-styled email per subscriber out, exactly once."""

__version__ = "0.1.0"

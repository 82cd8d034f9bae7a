"""regwatch: a monitoring and SRE agent for private container registries."""

__version__ = "0.1.0"

"""tokenrelay: an LLM API relay station centred on streaming over Server-Sent Events."""

__version__ = "0.1.0"

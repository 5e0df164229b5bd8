"""trajkit: teach LLM agents from trajectories."""

__version__ = "0.1.0"

"""Trajectory records and the file formats they are read from and written to."""

from trajkit.data.schema import AGENT, OBSERVATION, ROLES, SYSTEM, TASK, Trajectory, Turn

__all__ = ["AGENT", "OBSERVATION", "ROLES", "SYSTEM", "TASK", "Trajectory", "Turn"]

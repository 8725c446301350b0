"""podium: a control plane that conducts a fleet of commodity Linux servers as one system."""

__version__ = "0.1.0"

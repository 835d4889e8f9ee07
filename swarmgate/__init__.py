"""swarmgate: label-driven layer-7 routing for Docker Swarm (Interlock-compatible)."""

__version__ = "0.1.0"

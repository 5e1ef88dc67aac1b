"""Prometheus exporter for DialNexa outbound calling campaigns."""

__version__ = "0.1.0"

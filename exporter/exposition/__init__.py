"""Exposition: metric declarations, their rendering, the /metrics body and the status page."""

"""Polling: when each campaign is fetched, what an outcome means, its state and staleness."""

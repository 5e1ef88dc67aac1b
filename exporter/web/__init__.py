"""The web side: the aiohttp application and its defences (connections, TLS, auth, policy)."""

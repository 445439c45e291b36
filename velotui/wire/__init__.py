"""The wire between agent and server: messages and their checks, client IDs, pinned TLS.

Both sides import this package; it imports nothing of the server, the console or the agent.
"""

"""The embedded development stack: the modules behind scripts/stack.py, and the small
programs it runs as children (mongo_server.py, localstripe_server.py)."""

"""The engine stack on this machine: real PostgreSQL, nats-server and Valkey, and the engine's processes.

python -m testkit.stack      # in the foreground, until Ctrl-C
"""

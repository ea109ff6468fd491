"""bp-openmeter engine: OpenMeter-v1-compatible metering on JetStream, PostgreSQL and Valkey."""

__version__ = "0.1.0"

"""Usage: the fixture events, the query matrix, the independent reference calculation, comparison."""

"""The chart rendered by helm and validated offline, and what its monitoring objects really select."""

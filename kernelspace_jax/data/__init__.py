"""Data pipelines: seeded synthetic sharp/blurry pairs (`synthetic`)."""

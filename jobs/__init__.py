"""protorec.jobs."""

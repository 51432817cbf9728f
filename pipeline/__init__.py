"""protorec.pipeline."""

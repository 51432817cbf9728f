"""protorec.models."""

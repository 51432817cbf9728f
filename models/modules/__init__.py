"""protorec.models.modules."""

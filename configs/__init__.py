"""protorec.configs."""

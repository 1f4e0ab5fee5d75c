from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the database health page and command, and the nightly recall sample."""

    name = "ops"
    verbose_name = "Operations"

from argparse import ArgumentParser
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from core import services


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (on the last line). It is shown only once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell tokens apart.")

    def handle(self, *args: Any, username: str, name: str, **options: Any) -> None:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}. Create one with `manage.py createsuperuser`.")
        try:
            token, raw = services.token_create(user=user, name=name)
        except services.TokenRefused as error:
            raise CommandError(str(error)) from error
        self.stderr.write(f"Token {token.prefix}… created for {username}; store it now, it is not kept.")
        self.stdout.write(raw)

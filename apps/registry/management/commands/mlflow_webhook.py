"""``manage.py mlflow_webhook --url URL``: register (or update) MLflow's webhook that tells Modelplane at once
when a model version is created or an alias moves. Needs MODELPLANE_MLFLOW_WEBHOOK_SECRET."""
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.core.actors import Actor
from apps.core.errors import ServiceError
from apps.registry.services import mlflow_webhook_ensure


class Command(BaseCommand):
    help = "Point MLflow's registry webhook at Modelplane's /api/v1/hooks/mlflow/."

    def add_arguments(self, parser):
        parser.add_argument("--url", required=True, help="Modelplane's webhook URL as MLflow reaches it.")

    def handle(self, *args, **options):
        try:
            state = mlflow_webhook_ensure(actor=Actor.system("mlflow_webhook"), url=options["url"],
                                          secret=settings.MODELPLANE_MLFLOW_WEBHOOK_SECRET or "")
        except ServiceError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"MLflow webhook {state['webhook_id']} -> {state['url']} ({', '.join(state['events'])})")

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """The data-plane process (``manage.py gateway``). It has no models: its hot path never touches the ORM."""

    name = "apps.gateway"

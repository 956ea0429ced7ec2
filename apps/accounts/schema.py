"""Tells drf-spectacular how our bearer tokens authenticate, so the schema documents them."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "An API token from the Tokens page: `Authorization: Bearer mp_<prefix>_<secret>`."}

"""``manage.py seed_demo``: the demo teams and one user per role, created through the account services.

Idempotent: a team, user or membership that already exists is left as it is (an existing user keeps the password
they have). Every row is created by ``Actor.system("seed_demo")``, so the audit trail shows where it came from.
``standalone`` runs this on every start unless ``--no-demo`` is given, and prints :data:`DEMO_PASSWORD` and
:data:`DEMO_USERS` as the demo logins.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.core.management.base import BaseCommand, CommandError

from apps.core.permissions import (
    APPROVER,
    DATA_SCIENTIST,
    ML_ENGINEER,
    RISK_OFFICER,
    TEAM_ADMIN,
    VIEWER,
)

# One password for every demo user. It passes Django's default validators (length, not common, not numeric,
# not like any demo username), which user_create enforces.
DEMO_PASSWORD = "modelplane-demo"


@dataclass(frozen=True)
class DemoTeam:
    """A team the demo creates."""

    slug: str
    name: str
    description: str


@dataclass(frozen=True)
class DemoUser:
    """A demo login: a platform admin (team is None) or a member of one team with one role."""

    username: str
    display_name: str
    team: str | None = None
    role: str | None = None
    is_platform_admin: bool = False


DEMO_TEAMS = [
    DemoTeam("fraud", "Fraud Detection", "Card and transfer fraud scoring models."),
    DemoTeam("recs", "Recommendations", "Product and content recommendation models."),
]

DEMO_USERS = [
    DemoUser("admin", "Platform Admin", is_platform_admin=True),
    DemoUser("viewer", "Vera Viewer", "fraud", VIEWER),
    DemoUser("scientist", "Sam Scientist", "fraud", DATA_SCIENTIST),
    DemoUser("engineer", "Eli Engineer", "fraud", ML_ENGINEER),
    DemoUser("approver", "Ada Approver", "fraud", APPROVER),
    DemoUser("risk", "Rita Risk", "fraud", RISK_OFFICER),
    DemoUser("teamadmin", "Tom Teamadmin", "fraud", TEAM_ADMIN),
    DemoUser("recs-scientist", "Rae Scientist", "recs", DATA_SCIENTIST),
    DemoUser("recs-engineer", "Rob Engineer", "recs", ML_ENGINEER),
    DemoUser("recs-admin", "Rosa Admin", "recs", TEAM_ADMIN),
]


# Serving environments, all on the local backend (MLflow scoring servers on this machine).
DEMO_ENVIRONMENTS = [
    ("dev", "Try things out: anyone with the ML engineer role deploys here.", False),
    ("staging", "Pre-production checks with production-like settings.", False),
    ("production", "Production: deployments only through an approved promotion (platform admins until then).",
     True),
]


def demo_logins_text() -> str:
    """A few lines naming the demo logins, for standalone's ready message."""
    lines = [f'Demo logins (password "{DEMO_PASSWORD}"):']
    lines.append("  admin (platform admin)")
    teams = {t.slug: t.name for t in DEMO_TEAMS}
    for slug, name in teams.items():
        members = ", ".join(f"{u.username} ({u.role})" for u in DEMO_USERS if u.team == slug)
        lines.append(f"  {name}: {members}")
    return "\n".join(lines)


class Command(BaseCommand):
    help = ("Create the demo teams, users (one per role) and serving environments if they do not exist yet. "
            "Safe to run again.")

    def handle(self, *args, **options):
        # Imported here so that importing this module (standalone reads DEMO_PASSWORD) needs no app registry.
        from django.db import transaction

        from apps.accounts.models import Membership, Team, User
        from apps.accounts.services import membership_add, team_create, user_create
        from apps.core.actors import Actor
        from apps.core.errors import ServiceError
        from apps.deployments.models import Environment
        from apps.deployments.services import environment_create

        actor = Actor.system("seed_demo")
        created: list[str] = []
        try:
            with transaction.atomic():
                teams: dict[str, Team] = {}
                for spec in DEMO_TEAMS:
                    team = Team.objects.filter(slug=spec.slug).first()
                    if team is None:
                        team = team_create(actor=actor, name=spec.name, slug=spec.slug,
                                           description=spec.description)
                        created.append(f"team {spec.slug}")
                    teams[spec.slug] = team
                for spec in DEMO_USERS:
                    user = User.objects.filter(username__iexact=spec.username).first()
                    if user is None:
                        user = user_create(actor=actor, username=spec.username, password=DEMO_PASSWORD,
                                           email=f"{spec.username}@example.org", display_name=spec.display_name,
                                           is_platform_admin=spec.is_platform_admin)
                        created.append(f"user {spec.username}")
                    if spec.team is None:
                        continue
                    team = teams[spec.team]
                    if not Membership.objects.filter(user=user, team=team, role=spec.role).exists():
                        membership_add(actor=actor, team_id=team.pk, user_id=user.pk, role=spec.role)
                        created.append(f"membership {spec.username}={spec.role}@{spec.team}")
                for env_name, description, is_production in DEMO_ENVIRONMENTS:
                    if not Environment.objects.filter(name=env_name).exists():
                        environment_create(actor=actor, name=env_name, description=description,
                                           is_production=is_production)
                        created.append(f"environment {env_name}")
        except ServiceError as exc:
            raise CommandError(f"seed_demo: {exc.message} {exc.fields or ''}".strip()) from exc

        if created:
            self.stdout.write(self.style.SUCCESS(f"seed_demo: created {len(created)}: " + ", ".join(created)))
        else:
            self.stdout.write("seed_demo: the demo data is already there; nothing to do.")

"""Every state change to users, teams, memberships and API tokens."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import ApiToken, Membership, Team, User, slug_validator
from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.errors import Conflict, NotFound, ValidationFailed, field_error
from apps.core.permissions import ROLES, require


def _check_length(field: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise field_error(field, f"Ensure this field has no more than {limit} characters (it has {len(value)}).",
                          code="max_length")


@transaction.atomic
def user_create(*, actor: Actor, username: str, password: str, email: str = "", display_name: str = "",
                is_platform_admin: bool = False) -> User:
    """Create a person who can sign in (platform admins only)."""
    require(actor, "user.manage")
    username = (username or "").strip()
    if not username:
        raise field_error("username", "This field is required.", code="required")
    _check_length("username", username, 150)
    try:
        User.username_validator(username)
    except ValidationError as exc:
        raise field_error("username", " ".join(exc.messages)) from exc
    email, display_name = (email or "").strip(), (display_name or "").strip()
    _check_length("display_name", display_name, 150)
    if email:
        _check_length("email", email, 254)
        try:
            validate_email(email)
        except ValidationError as exc:
            raise field_error("email", "Enter a valid email address.") from exc
    if User.objects.filter(username__iexact=username).exists():
        raise Conflict(f"A user named {username!r} already exists.", fields={"username": ["already exists"]})
    user = User(username=username, email=email, display_name=display_name, is_platform_admin=is_platform_admin)
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationFailed("password: " + " ".join(exc.messages), fields={"password": exc.messages}) from exc
    user.set_password(password)
    user.save()
    audit_event_record(actor=actor, verb="user.created", target=user, after=user.snapshot())
    return user


@transaction.atomic
def team_create(*, actor: Actor, name: str, slug: str, description: str = "") -> Team:
    """Create a team (platform admins only)."""
    require(actor, "team.create")
    name, slug = (name or "").strip(), (slug or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["This field is required."]
    elif len(name) > 100:
        errors["name"] = [f"Ensure this field has no more than 100 characters (it has {len(name)})."]
    if not slug:
        errors["slug"] = ["This field is required."]
    else:
        try:
            slug_validator(slug)
            if len(slug) > 50:
                raise ValidationError(f"Ensure this field has no more than 50 characters (it has {len(slug)}).")
        except ValidationError as exc:
            errors["slug"] = list(exc.messages)
    if len(description) > 2000:
        errors["description"] = ["Ensure this field has no more than 2000 characters."]
    if errors:
        raise ValidationFailed("The team is not valid.", fields=errors)
    if Team.objects.filter(name__iexact=name).exists():
        raise Conflict(f"A team named {name!r} already exists.", fields={"name": ["already exists"]})
    if Team.objects.filter(slug=slug).exists():
        raise Conflict(f"A team with slug {slug!r} already exists.", fields={"slug": ["already exists"]})
    team = Team.objects.create(name=name, slug=slug, description=description)
    audit_event_record(actor=actor, verb="team.created", target=team, after=team.snapshot())
    return team


@transaction.atomic
def team_update(*, actor: Actor, team_id: int, name: str | None = None, description: str | None = None) -> Team:
    """Rename a team or change its description (team admins)."""
    team = Team.objects.select_for_update().filter(pk=team_id).first()
    if team is None:
        raise NotFound("Team not found.")
    require(actor, "team.update", team)
    before = team.snapshot()
    if name is not None:
        name = name.strip()
        if not name:
            raise field_error("name", "This field may not be blank.", code="blank")
        _check_length("name", name, 100)
        if Team.objects.filter(name__iexact=name).exclude(pk=team.pk).exists():
            raise Conflict(f"A team named {name!r} already exists.", fields={"name": ["already exists"]})
        team.name = name
    if description is not None:
        _check_length("description", description, 2000)
        team.description = description
    team.save()
    audit_event_record(actor=actor, verb="team.updated", target=team, before=before, after=team.snapshot())
    return team


@transaction.atomic
def membership_add(*, actor: Actor, team_id: int, user_id: int, role: str) -> Membership:
    """Give a user a role in a team (team admins of that team)."""
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise NotFound("Team not found.", fields={"team": [f"No team with id {team_id}."]})
    require(actor, "membership.manage", team)
    if role not in ROLES:
        raise field_error("role", f"{role!r} is not a role; choose one of {', '.join(ROLES)}.", code="invalid_choice")
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        raise field_error("user", f"No active user with id {user_id}.", code="does_not_exist")
    try:
        with transaction.atomic():
            membership = Membership.objects.create(team=team, user=user, role=role)
    except IntegrityError as exc:
        raise Conflict(f"{user.username} already holds the role {role} in {team.name}.",
                       fields={"role": ["already held"]}) from exc
    audit_event_record(actor=actor, verb="membership.added", target=membership, team_id=team.pk,
                       after={"user": user.username, "user_id": user.pk, "team_id": team.pk, "role": role})
    return membership


@transaction.atomic
def membership_remove(*, actor: Actor, membership_id: int) -> None:
    """Take a role away (team admins). The last team admin of a team cannot be removed."""
    membership = Membership.objects.select_for_update().select_related("user", "team").filter(
        pk=membership_id).first()
    if membership is None:
        raise NotFound("Membership not found.")
    require(actor, "membership.manage", membership.team)
    if membership.role == "team_admin" and not Membership.objects.filter(
            team_id=membership.team_id, role="team_admin").exclude(pk=membership.pk).exists():
        raise Conflict("A team must keep at least one team admin.", fields={"role": ["last team admin"]})
    before = {"user": membership.user.username, "user_id": membership.user_id, "team_id": membership.team_id,
              "role": membership.role}
    target_repr = str(membership)
    pk = membership.pk
    membership.delete()
    audit_event_record(actor=actor, verb="membership.removed", target="accounts.membership", target_id=pk,
                       target_repr=target_repr, team_id=before["team_id"], before=before)


@transaction.atomic
def apitoken_create(*, actor: Actor, name: str, scopes: list[str] | None = None,
                    expires_in_days: int = 90) -> tuple[ApiToken, str]:
    """Create an API token for the acting user; returns the row and the secret, which is never shown again."""
    require(actor, "token.manage_own")
    if actor.user is None:
        raise ValidationFailed("Only a user can own an API token.")
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["This field is required."]
    elif len(name) > 100:
        errors["name"] = [f"Ensure this field has no more than 100 characters (it has {len(name)})."]
    scopes = list(dict.fromkeys(scopes if scopes is not None else ["read"]))
    if not scopes:
        errors["scopes"] = ["Choose at least one scope: read, write."]
    elif any(s not in ("read", "write") for s in scopes):
        errors["scopes"] = [f"Unknown scope; choose from read, write (got {', '.join(map(str, scopes))})."]
    if "write" in scopes and "read" not in scopes:
        scopes.insert(0, "read")  # write implies read
    if not isinstance(expires_in_days, int) or isinstance(expires_in_days, bool):
        errors["expires_in_days"] = ["A whole number of days is required."]
    elif not 1 <= expires_in_days <= settings.API_TOKEN_MAX_DAYS:
        errors["expires_in_days"] = [f"Choose between 1 and {settings.API_TOKEN_MAX_DAYS} days."]
    if errors:
        raise ValidationFailed("The token is not valid.", fields=errors)
    if ApiToken.objects.filter(user=actor.user, name=name).exists():
        raise Conflict(f"You already have a token named {name!r}.", fields={"name": ["already exists"]})
    full, prefix, key_hash = ApiToken.generate()
    token = ApiToken.objects.create(user=actor.user, name=name, prefix=prefix, key_hash=key_hash, scopes=scopes,
                                    expires_at=timezone.now() + timedelta(days=expires_in_days))
    audit_event_record(actor=actor, verb="token.created", target=token, after=token.snapshot())
    return token, full


@transaction.atomic
def apitoken_revoke(*, actor: Actor, token_id: int) -> ApiToken:
    """Revoke a token at once. Users revoke their own; platform admins may revoke anyone's."""
    token = ApiToken.objects.select_for_update().filter(pk=token_id).first()
    if token is None or (token.user_id != actor.user_id and not actor.is_platform_admin):
        raise NotFound("Token not found.")
    require(actor, "token.manage_own")
    if token.revoked_at is not None:
        raise Conflict("This token is already revoked.", fields={"token": ["already revoked"]})
    before = token.snapshot()
    token.revoked_at = timezone.now()
    token.save(update_fields=["revoked_at", "updated_at"])
    audit_event_record(actor=actor, verb="token.revoked", target=token, before=before, after=token.snapshot())
    return token


def session_login_record(*, actor: Actor) -> None:
    """Record a sign-in in the audit trail (the session itself is Django's)."""
    with transaction.atomic():
        audit_event_record(actor=actor, verb="user.logged_in", target=actor.user,
                           target_repr=actor.user.get_username())


def session_logout_record(*, actor: Actor) -> None:
    with transaction.atomic():
        audit_event_record(actor=actor, verb="user.logged_out", target=actor.user,
                           target_repr=actor.user.get_username())

"""Sign-in, API tokens, teams and memberships pages. Every change goes through apps.accounts.services."""
from __future__ import annotations

import time

from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from apps.accounts import selectors, services
from apps.accounts.forms import ApiTokenForm, MembershipForm, TeamForm
from apps.accounts.models import User
from apps.core.actors import Actor
from apps.core.errors import NotFound, PermissionDenied, ServiceError
from apps.core.forms import apply_service_error, posted
from apps.core.middleware import SessionTimeoutMiddleware
from apps.core.permissions import ROLE_CHOICES, has_perm


class LoginView(auth_views.LoginView):
    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def form_valid(self, form):
        response = super().form_valid(form)
        # The absolute timeout counts from the sign-in itself, not from the first page after it.
        self.request.session[SessionTimeoutMiddleware.KEY] = time.time()
        services.session_login_record(actor=Actor.from_request(self.request))
        return response


@require_POST
def logout_view(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        services.session_logout_record(actor=Actor.from_request(request))
    return auth_views.LogoutView.as_view()(request)


@never_cache  # the page shows a new token's secret once; no browser or proxy cache may keep it
@login_required
def token_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    form = ApiTokenForm(posted(request))
    new_secret = new_name = None
    if request.method == "POST" and form.is_valid():
        # The secret is shown in this response only and stored nowhere. A reload re-posts the same form; its
        # one-time nonce makes that a no-op instead of a second token.
        nonce = form.cleaned_data.get("nonce")
        if nonce and not cache.add(f"tokenform:{actor.user_id}:{nonce}", 1, 24 * 60 * 60):
            messages.info(request, "That form was already submitted: the token exists and its secret was shown "
                                   "once. Revoke it and create another if you did not copy it.")
            return redirect("accounts:token_list")
        try:
            token, secret = services.apitoken_create(
                actor=actor, name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"],
                expires_in_days=form.cleaned_data["expires_in_days"])
        except ServiceError as exc:
            apply_service_error(form, exc)
        else:
            new_secret, new_name = secret, token.name
            form = ApiTokenForm()
    status = 400 if (request.method == "POST" and form.errors) else 200
    return render(request, "accounts/token_list.html", {
        "tokens": selectors.apitoken_list(actor=actor), "form": form,
        "new_secret": new_secret, "new_token_name": new_name,
    }, status=status)


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        token = services.apitoken_revoke(actor=Actor.from_request(request), token_id=pk)
    except NotFound:
        raise Http404
    except ServiceError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Token {token.name} revoked.")
    return redirect("accounts:token_list")


@login_required
def team_list(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    can_create = has_perm(actor, "team.create")
    form = TeamForm(posted(request)) if can_create else None
    if request.method == "POST":
        if not can_create:
            return render(request, "403.html", status=403)
        if form.is_valid():
            try:
                team = services.team_create(actor=actor, **form.cleaned_data)
            except ServiceError as exc:
                apply_service_error(form, exc)
            else:
                messages.success(request, f"Team {team.name} created.")
                return redirect("accounts:team_detail", pk=team.pk)
    status = 400 if (form is not None and form.errors) else 200
    return render(request, "accounts/team_list.html", {
        "teams": selectors.team_list(actor=actor), "form": form, "can_create": can_create,
    }, status=status)


@login_required
def team_detail(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        team = selectors.team_get(actor=actor, pk=pk)
    except NotFound:
        raise Http404
    can_manage = has_perm(actor, "membership.manage", team)
    form = MembershipForm(posted(request)) if can_manage else None
    if request.method == "POST":
        if not can_manage:
            return render(request, "403.html", status=403)
        if form.is_valid():
            user = User.objects.filter(username=form.cleaned_data["username"], is_active=True).first()
            if user is None:
                form.add_error("username", "No active user with this username.")
            else:
                try:
                    services.membership_add(actor=actor, team_id=team.pk, user_id=user.pk,
                                            role=form.cleaned_data["role"])
                except ServiceError as exc:
                    apply_service_error(form, exc)
                else:
                    messages.success(request, f"{user.username} is now {form.cleaned_data['role']} in {team.name}.")
                    return redirect("accounts:team_detail", pk=team.pk)
    status = 400 if (form is not None and form.errors) else 200
    return render(request, "accounts/team_detail.html", {
        "team": team, "memberships": selectors.membership_list(actor=actor, team_id=team.pk),
        "form": form, "can_manage": can_manage, "roles": ROLE_CHOICES,
    }, status=status)


@login_required
@require_POST
def membership_remove(request: HttpRequest, pk: int) -> HttpResponse:
    actor = Actor.from_request(request)
    try:
        membership = selectors.membership_get(actor=actor, pk=pk)
        team_id = membership.team_id
        services.membership_remove(actor=actor, membership_id=pk)
    except NotFound:
        raise Http404
    except PermissionDenied:
        return render(request, "403.html", status=403)
    except ServiceError as exc:
        messages.error(request, exc.message)
        return redirect("accounts:team_detail", pk=membership.team_id)
    messages.success(request, "Role removed.")
    return redirect("accounts:team_detail", pk=team_id)


@login_required
def profile(request: HttpRequest) -> HttpResponse:
    actor = Actor.from_request(request)
    memberships = selectors.membership_list(actor=actor).filter(user_id=actor.user_id)
    return render(request, "accounts/profile.html", {"memberships": memberships})

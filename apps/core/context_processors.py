"""What every page of the dashboard shell needs: navigation, the user's teams and the current team."""
from __future__ import annotations

from apps.core.navigation import navigation_for


def shell(request) -> dict:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from apps.accounts.selectors import team_list
    from apps.core.actors import Actor

    actor = Actor.from_request(request)
    teams = list(team_list(actor=actor))
    current_id = request.session.get("current_team_id") if hasattr(request, "session") else None
    current = next((t for t in teams if t.pk == current_id), teams[0] if teams else None)
    return {
        "nav_items": navigation_for(actor, request.path),
        "shell_teams": teams,
        "current_team": current,
    }

"""THE role matrix: every URL pattern of the project, every role, on an object of their own team and of another.

Roles: anonymous; viewer, data_scientist, ml_engineer, approver, risk_officer and team_admin, each a member of
team A only; platform_admin, a member of no team. "own" objects belong to team A (or, for API tokens, to the
caller), "other" objects to team B (or to a member of team B).

The table below is the statement of who may do what. It must list every named URL pattern of the project and
nothing else: a new page or endpoint fails ``test_every_url_pattern_is_in_the_table`` until someone decides, in
this table, who may use it.

Expected answers: an HTTP status, or ``LOGIN`` (a redirect to the sign-in page, what pages answer anonymous
users). A plain 302 must redirect somewhere other than the sign-in page.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, Membership, Team, User
from apps.audit.services import audit_event_record
from apps.core.actors import Actor
from apps.core.navigation import AREAS, navigation_for
from apps.core.permissions import ROLE_VERBS
from apps.core.permissions import ROLES as TEAM_ROLES

pytestmark = pytest.mark.django_db

ROLES = ("anonymous", "viewer", "data_scientist", "ml_engineer", "approver", "risk_officer", "team_admin",
         "platform_admin")
assert list(ROLES[1:-1]) == TEAM_ROLES  # the matrix covers every role the code knows

LOGIN = "login"


def row(*answers) -> tuple:
    assert len(answers) == len(ROLES)
    return answers


def own_other(own: tuple, other: tuple) -> dict:
    return {"own": own, "other": other}


#            anonymous viewer  data_sci ml_eng  approver risk    team_adm plat_adm
ALL_200 = row(LOGIN,   200,    200,     200,    200,     200,    200,     200)
AUDIT_200 = row(LOGIN, 403,    403,     403,    200,     200,    200,     200)
API_ALL_200 = row(401, 200,    200,     200,    200,     200,    200,     200)
API_AUDIT = row(401,   403,    403,     403,    200,     200,    200,     200)
API_PA_ONLY = row(401, 403,    403,     403,    403,     403,    403,     201)
PAGE_POST_ONLY = row(LOGIN, 405, 405,   405,    405,     405,    405,     405)
# registry pages: model.register / model.update / alias.set are the builders' verbs (data scientist, ML engineer,
# team admin; platform admins hold every team verb)
REGISTER_200 = row(LOGIN, 403, 200,     200,    403,     403,    200,     200)
REGISTER_400 = row(LOGIN, 403, 400,     400,    403,     403,    400,     400)
REGISTER_302 = row(LOGIN, 403, 302,     302,    403,     403,    302,     302)
OTHER_404 = row(LOGIN,   404,    404,     404,    404,     404,    404,     200)
EXPERIMENTS_503 = row(LOGIN, 403, 503,  503,    403,     403,    503,     503)


def OTHER_404_PA(answer) -> tuple:
    """Another team's object: a 404 for every team role, ``answer`` for the platform admin."""
    return row(LOGIN, 404, 404, 404, 404, 404, 404, answer)


def PA_ONLY(answer) -> tuple:
    return row(LOGIN, 403, 403, 403, 403, 403, 403, answer)


# serving: deployment.create / update / rollback / key_manage are the operators' verbs (ML engineer, team admin);
# deployment.invoke (the "try it" box) is the builders' too (data scientist)
def DEPLOY(answer) -> tuple:
    return row(LOGIN, 403, 403, answer, 403, 403, answer, answer)


def INVOKE(answer) -> tuple:
    return row(LOGIN, 403, answer, answer, 403, 403, answer, answer)


def API_DEPLOY(answer) -> tuple:
    return row(401, 403, 403, answer, 403, 403, answer, answer)


def API_OTHER_404(answer) -> tuple:
    """Another team's object through the API: a 404 for every team role, ``answer`` for the platform admin."""
    return row(401, 404, 404, 404, 404, 404, 404, answer)

TABLE: dict[str, dict[str, tuple | dict]] = {
    # ------------------------------------------------------------ the shell
    "core:home": {"GET": ALL_200},
    "core:home_counts": {"GET": ALL_200},
    "core:healthz": {"GET": row(200, 200, 200, 200, 200, 200, 200, 200)},  # no sign-in: for load balancers
    "core:team_switch": {"GET": PAGE_POST_ONLY,
                         "POST": row(LOGIN, 302, 302, 302, 302, 302, 302, 302)},
    # "not yet" areas: every team role holds model/deployment/promotion/monitoring/cost .view (ROLE_VERBS _READ)
    "core:area_approvals": {"GET": ALL_200},
    "core:area_monitoring": {"GET": ALL_200},
    "core:area_costs": {"GET": ALL_200},
    # ------------------------------------------------------------ accounts pages
    "accounts:login": {"GET": row(200, 302, 302, 302, 302, 302, 302, 302)},
    "accounts:logout": {"GET": row(405, 405, 405, 405, 405, 405, 405, 405),
                        "POST": row(LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN)},  # signed out: to sign-in
    "accounts:profile": {"GET": ALL_200},
    "accounts:token_list": {"GET": ALL_200,
                            "POST": ALL_200},  # the page again, with the new secret
    "accounts:token_revoke": {
        "GET": PAGE_POST_ONLY,
        # "other": someone else's token. Platform admins may revoke anyone's (apitoken_revoke's docstring).
        "POST": own_other(row(LOGIN, 302, 302, 302, 302, 302, 302, 302),
                          row(LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    },
    "accounts:team_list": {"GET": ALL_200,
                           "POST": row(LOGIN, 403, 403, 403, 403, 403, 403, 302)},
    "accounts:team_detail": {
        "GET": own_other(row(LOGIN, 200, 200, 200, 200, 200, 200, 200),
                         row(LOGIN, 404, 404, 404, 404, 404, 404, 200)),
        "POST": own_other(row(LOGIN, 403, 403, 403, 403, 403, 302, 302),  # add a member
                          row(LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    },
    "accounts:membership_remove": {
        "GET": PAGE_POST_ONLY,
        "POST": own_other(row(LOGIN, 403, 403, 403, 403, 403, 302, 302),
                          row(LOGIN, 404, 404, 404, 404, 404, 404, 302)),
    },
    # ------------------------------------------------------------ audit pages
    "audit:event_list": {"GET": AUDIT_200},
    "audit:event_detail": {
        # Roles without audit.view get 403 for every event (they may not open the trail at all), so the
        # answer for another team's event tells them nothing either.
        "GET": own_other(AUDIT_200, row(LOGIN, 403, 403, 403, 404, 404, 404, 200)),
    },
    # ------------------------------------------------------------ registry pages
    # Objects are rows made with the ORM (_page_version and friends below); MLflow is never reached. A form that
    # would call MLflow is posted with input that its form or service refuses right after the permission
    # check, so a 400 answers "allowed" and a 403/404 "refused". The experiments pages read MLflow and nothing
    # else: the matrix points MLflow at a closed port (_mlflow_unreachable), so "allowed" is MLflow's 503 there,
    # which also shows that MLflow being down is a 503 page and never a 500. tests/registry/test_pages.py has
    # every success path against a real MLflow.
    "registry:model_list": {"GET": ALL_200},
    "registry:register": {"GET": REGISTER_200,
                          # {"team": own/other, "run_id": "not-hex"}: the other team is not among the choices
                          "POST": own_other(REGISTER_400, REGISTER_400)},
    # multipart {"file": notes.txt, "team": own/other}: the form or the service refuses the team, then the file
    "registry:upload": {"GET": REGISTER_200, "POST": own_other(REGISTER_400, REGISTER_400)},
    "registry:model_detail": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:model_edit": {"GET": own_other(REGISTER_200, OTHER_404),
                            "POST": own_other(REGISTER_400, OTHER_404_PA(400))},  # {"risk_tier": "extreme"}
    "registry:aliases": {"GET": own_other(ALL_200, OTHER_404),
                         # {"alias": "staging", "version": 999}: no such ready version
                         "POST": own_other(REGISTER_400, OTHER_404_PA(400))},
    "registry:alias_remove": {"GET": PAGE_POST_ONLY,
                              # {"alias": "staging"} that no version holds
                              "POST": own_other(REGISTER_400, OTHER_404_PA(400))},
    "registry:version_detail": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:card_edit": {"GET": own_other(REGISTER_200, OTHER_404),
                           "POST": own_other(REGISTER_302, OTHER_404_PA(302))},  # a new revision
    "registry:card_export_html": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:card_export_json": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:scan_status": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:scan_request": {"GET": PAGE_POST_ONLY,
                              "POST": own_other(REGISTER_302, OTHER_404_PA(302))},  # a ready version, scan again
    "registry:version_archive": {"GET": own_other(REGISTER_200, OTHER_404),
                                 "POST": own_other(REGISTER_302, OTHER_404_PA(302))},
    # a blocked scan: releasing it is a platform admin's alone
    "registry:scan_override": {"GET": own_other(PA_ONLY(200), OTHER_404),
                               "POST": own_other(PA_ONLY(302), OTHER_404_PA(302))},
    # an upload (rows and a stored file; nothing reaches MLflow): every member follows it, builders retry it
    "registry:upload_detail": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:upload_status": {"GET": own_other(ALL_200, OTHER_404)},
    "registry:upload_retry": {"GET": PAGE_POST_ONLY,
                              "POST": own_other(REGISTER_302, OTHER_404_PA(302))},  # a failed upload, queued again
    # MLflow's experiments have no team: experiment.view in any team opens them all (403 without it)
    "registry:experiment_list": {"GET": EXPERIMENTS_503},
    "registry:experiment_detail": {"GET": EXPERIMENTS_503},
    "registry:run_detail": {"GET": EXPERIMENTS_503},
    "registry:run_compare": {"GET": EXPERIMENTS_503},
    # ------------------------------------------------------------ serving pages
    # Objects are rows made with the ORM (_deployment below); no model server starts (the reconcile that a
    # service queues on commit never runs inside the matrix's transaction). The "try it" box reaches a gateway on
    # a closed port (_gateway_unreachable), so "allowed" is its 503 there.
    "deployments:deployment_list": {"GET": ALL_200},
    # {"model_version": a ready version of own/other team}: the other team's is not theirs to deploy (a 400 on
    # the field, from the service), except for a platform admin
    "deployments:deployment_create": {"GET": DEPLOY(200),
                                      "POST": own_other(DEPLOY(302), row(LOGIN, 403, 403, 400, 403, 403, 400, 302))},
    "deployments:deployment_detail": {"GET": own_other(ALL_200, OTHER_404)},
    "deployments:deployment_status": {"GET": own_other(ALL_200, OTHER_404)},
    "deployments:deployment_edit": {"GET": own_other(DEPLOY(200), OTHER_404),
                                    "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},  # {"replicas": 2}
    # a running deployment, {"model_version": its model's other ready version}: a blue-green rollout starts
    "deployments:deployment_rollout": {"GET": PAGE_POST_ONLY, "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},
    # a rollout in progress: the rollback cancels its candidate
    "deployments:deployment_rollback": {"GET": PAGE_POST_ONLY, "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},
    "deployments:deployment_stop": {"GET": PAGE_POST_ONLY, "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},
    "deployments:deployment_start": {"GET": PAGE_POST_ONLY,  # a stopped deployment
                                     "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},
    "deployments:deployment_try": {"GET": PAGE_POST_ONLY, "POST": own_other(INVOKE(503), OTHER_404_PA(503))},
    # keys are listed (never shown) to every member; POST {"name": ...}: the page again, with the new key once
    "deployments:key_list": {"GET": own_other(ALL_200, OTHER_404), "POST": own_other(DEPLOY(200), OTHER_404_PA(200))},
    "deployments:key_revoke": {"GET": PAGE_POST_ONLY, "POST": own_other(DEPLOY(302), OTHER_404_PA(302))},
    "deployments:replica_output": {"GET": own_other(ALL_200, OTHER_404)},
    # environments are not a team's: everyone signed in sees them, platform admins change them
    "deployments:environment_list": {"GET": ALL_200},
    "deployments:environment_create": {"GET": PA_ONLY(200), "POST": PA_ONLY(302)},
    "deployments:environment_edit": {"GET": PA_ONLY(200), "POST": PA_ONLY(302)},
    # ------------------------------------------------------------ API
    "api:api-root": {"GET": API_ALL_200},
    "api:me": {"GET": API_ALL_200},
    "api:user-list": {"GET": API_ALL_200, "POST": API_PA_ONLY},
    "api:user-detail": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    "api:team-list": {"GET": API_ALL_200, "POST": API_PA_ONLY},
    "api:team-detail": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        "PATCH": own_other(row(401, 403, 403, 403, 403, 403, 200, 200),
                           row(401, 404, 404, 404, 404, 404, 404, 200)),
    },
    "api:membership-list": {
        "GET": API_ALL_200,
        "POST": own_other(row(401, 403, 403, 403, 403, 403, 201, 201),
                          row(401, 404, 404, 404, 404, 404, 404, 201)),
    },
    "api:membership-detail": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        "DELETE": own_other(row(401, 403, 403, 403, 403, 403, 204, 204),
                            row(401, 404, 404, 404, 404, 404, 404, 204)),
    },
    "api:token-list": {"GET": API_ALL_200, "POST": row(401, 201, 201, 201, 201, 201, 201, 201)},
    # API tokens are personal: nobody, not even a platform admin, reads another person's through the API.
    "api:token-detail": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 404))},
    "api:token-revoke": {"POST": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 404))},
    "api:auditevent-list": {"GET": API_AUDIT},
    "api:auditevent-detail": {"GET": own_other(API_AUDIT, row(401, 403, 403, 403, 404, 404, 404, 200))},
    # ------------------------------------------------------------ registry API
    # The objects are rows made with the ORM (no MLflow; see _registry_* below). A write that would reach MLflow
    # gets a body its service refuses right after the permission check: a 400 says "allowed", so the answers
    # still say who may, without MLflow.
    "api:model-list": {
        "GET": API_ALL_200,
        # {"team": own/other, "name": "bad name!"}: may this role create a model in that team?
        "POST": own_other(row(401, 403, 400, 400, 403, 403, 400, 400),
                          row(401, 404, 404, 404, 404, 404, 404, 400)),
    },
    "api:model-detail": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        # {"risk_tier": "low"}: a change that MLflow does not mirror
        "PATCH": own_other(row(401, 403, 200, 200, 403, 403, 200, 200),
                           row(401, 404, 404, 404, 404, 404, 404, 200)),
    },
    "api:model-aliases": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        # {"alias": "staging", "version": 999}: no such version
        "POST": own_other(row(401, 403, 400, 400, 403, 403, 400, 400),
                          row(401, 404, 404, 404, 404, 404, 404, 400)),
    },
    # DELETE .../aliases/staging/ of a model where no version holds it
    "api:model-alias-remove": {"DELETE": own_other(row(401, 403, 400, 400, 403, 403, 400, 400),
                                                   row(401, 404, 404, 404, 404, 404, 404, 400))},
    "api:version-list": {"GET": API_ALL_200},
    "api:version-detail": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    # {"model_name": new, "run_id": "not-hex", "team": own/other}: permission first, then the run id
    "api:version-register-from-run": {"POST": own_other(row(401, 403, 400, 400, 403, 403, 400, 400),
                                                        row(401, 404, 404, 404, 404, 404, 404, 400))},
    # multipart with a .txt file (no model): roles that may register nowhere are refused before the file is
    # read (403 even for the other team); the others reach the service, which checks the team, then the file.
    "api:version-upload": {"POST": own_other(row(401, 403, 400, 400, 403, 403, 400, 400),
                                             row(401, 403, 404, 404, 403, 403, 404, 400))},
    "api:version-lineage": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    "api:version-card": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        "POST": own_other(row(401, 403, 201, 201, 403, 403, 201, 201),  # {"intended_use": ...}: a revision
                          row(401, 404, 404, 404, 404, 404, 404, 201)),
    },
    "api:version-card-export": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    "api:version-scans": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        "POST": own_other(row(401, 403, 202, 202, 403, 403, 202, 202),  # a fresh ready version: scan again
                          row(401, 404, 404, 404, 404, 404, 404, 202)),
    },
    # POST {} (neither file nor artifact_path): permission first, then a 400 naming `file`
    "api:version-profiles": {
        "GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200)),
        "POST": own_other(row(401, 403, 400, 400, 403, 403, 400, 400), row(401, 404, 404, 404, 404, 404, 404, 400)),
    },
    "api:version-archive": {"POST": own_other(row(401, 403, 200, 200, 403, 403, 200, 200),
                                              row(401, 404, 404, 404, 404, 404, 404, 200))},
    "api:scan-detail": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    # a fresh blocked scan, a real justification: releasing a blocked version is a platform admin's alone
    "api:scan-override": {"POST": own_other(row(401, 403, 403, 403, 403, 403, 403, 200),
                                            row(401, 404, 404, 404, 404, 404, 404, 200))},
    "api:upload-list": {"GET": API_ALL_200},
    "api:upload-detail": {"GET": own_other(API_ALL_200, row(401, 404, 404, 404, 404, 404, 404, 200))},
    # a failed upload whose file is still stored: queued again (202)
    "api:upload-retry": {"POST": own_other(row(401, 403, 202, 202, 403, 403, 202, 202),
                                           row(401, 404, 404, 404, 404, 404, 404, 202))},
    # MLflow's webhook authenticates by its HMAC signature, never by session or token. The matrix configures no
    # secret, so it refuses everyone alike; signatures are tested in tests/registry/test_api.py.
    "api:mlflow-webhook": {"POST": row(503, 503, 503, 503, 503, 503, 503, 503)},
    # ------------------------------------------------------------ serving API
    # The same ORM rows as the serving pages (_deployment); "try it" reaches the closed gateway port (503).
    "api:environment-list": {"GET": API_ALL_200, "POST": API_PA_ONLY},
    "api:environment-detail": {"GET": API_ALL_200,
                               "PATCH": row(401, 403, 403, 403, 403, 403, 403, 200)},  # {"description": ...}
    # POST {"model_version": own/other team's ready version}. The service looks the version up before the
    # permission (another team's version is "no such version", 400, for every team role: it tells nothing).
    "api:deployment-list": {"GET": API_ALL_200,
                            "POST": own_other(API_DEPLOY(201), row(401, 400, 400, 400, 400, 400, 400, 201))},
    "api:deployment-detail": {"GET": own_other(API_ALL_200, API_OTHER_404(200)),
                              "PATCH": own_other(API_DEPLOY(200), API_OTHER_404(200))},  # {"replicas": 2}
    "api:deployment-rollout": {"POST": own_other(API_DEPLOY(200), API_OTHER_404(200))},
    "api:deployment-rollback": {"POST": own_other(API_DEPLOY(200), API_OTHER_404(200))},
    "api:deployment-stop": {"POST": own_other(API_DEPLOY(200), API_OTHER_404(200))},
    "api:deployment-start": {"POST": own_other(API_DEPLOY(200), API_OTHER_404(200))},
    "api:deployment-events": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:deployment-variants": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:deployment-replicas": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:deployment-keys": {"GET": own_other(API_ALL_200, API_OTHER_404(200)),
                            "POST": own_other(API_DEPLOY(201), API_OTHER_404(201))},
    "api:deployment-metrics": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:deployment-try-it": {"POST": own_other(row(401, 403, 503, 503, 403, 403, 503, 503), API_OTHER_404(503))},
    "api:deploymentkey-detail": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:deploymentkey-revoke": {"POST": own_other(API_DEPLOY(200), API_OTHER_404(200))},
    "api:replica-detail": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    "api:replica-log": {"GET": own_other(API_ALL_200, API_OTHER_404(200))},
    # ------------------------------------------------------------ API description (public: it holds no data)
    "schema": {"GET": row(200, 200, 200, 200, 200, 200, 200, 200)},
    "api-docs": {"GET": row(200, 200, 200, 200, 200, 200, 200, 200)},
}

# Patterns left out of the table on purpose, each with the reason.
EXCLUDED_BECAUSE = {
    "format_suffix": "DRF's DefaultRouter adds a format-suffix twin (e.g. /api/v1/teams.json) of each route: same "
                     "name, same view, same permission code as the route in the table "
                     "(test_format_suffix_twins_share_the_view_of_a_listed_route checks that).",
}


# ---------------------------------------------------------------- the URLconf

@dataclass
class Found:
    name: str | None
    route: str
    callback: object
    format_suffix: bool


def url_patterns() -> list[Found]:
    found: list[Found] = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                ns = namespace + (f"{p.namespace}:" if p.namespace else "")
                walk(p.url_patterns, prefix + str(p.pattern), ns)
            elif isinstance(p, URLPattern):
                found.append(Found(namespace + p.name if p.name else None, prefix + str(p.pattern), p.callback,
                                   "format" in p.pattern.regex.groupindex))

    walk(get_resolver().url_patterns, "", "")
    return found


def _view_of(callback):
    return getattr(callback, "cls", None) or getattr(callback, "view_class", None) or callback


def test_every_url_pattern_is_in_the_table():
    patterns = [f for f in url_patterns() if not f.format_suffix]
    unnamed = [f.route for f in patterns if f.name is None]
    assert not unnamed, f"URL patterns without a name cannot be in the role matrix: {unnamed}"
    names = [f.name for f in patterns]
    duplicated = {n for n in names if names.count(n) > 1}
    assert not duplicated, f"one name for several patterns: {duplicated}"
    missing = set(names) - set(TABLE)
    assert not missing, f"new URL patterns: add them to the role matrix with each role's answer: {sorted(missing)}"
    stale = set(TABLE) - set(names)
    assert not stale, f"the role matrix lists patterns that no longer exist: {sorted(stale)}"


def test_format_suffix_twins_share_the_view_of_a_listed_route():
    by_name = {f.name: f for f in url_patterns() if not f.format_suffix}
    twins = [f for f in url_patterns() if f.format_suffix]
    assert twins, "no format-suffix patterns: drop the exclusion"
    for twin in twins:
        assert twin.name in by_name and twin.name in TABLE, twin.route
        assert _view_of(twin.callback) is _view_of(by_name[twin.name].callback), twin.route
        assert getattr(twin.callback, "actions", None) == getattr(by_name[twin.name].callback, "actions", None)


def test_the_table_lists_every_method_of_every_api_endpoint():
    """A new action on a viewset (say PUT or DELETE) must get its row in the table."""
    for f in url_patterns():
        actions = getattr(f.callback, "actions", None)
        if f.format_suffix or not actions:
            continue
        assert {m.upper() for m in actions} - {"HEAD"} == set(TABLE[f.name]), f.name


# ---------------------------------------------------------------- the world the matrix runs in

@dataclass
class World:
    a: Team
    b: Team
    users: dict[str, User | None]
    member_a: User  # another member of team A (an "own" object)
    member_b: User  # a member of team B only (an "other" object)
    events: dict[str, int]
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    bearer: dict[str, str] = field(default_factory=dict)
    browsers: dict[str, Client] = field(default_factory=dict)

    def team(self, which: str) -> Team:
        return self.a if which == "own" else self.b

    def unique(self, stem: str) -> str:
        return f"{stem}{next(self.counter)}"

    def fresh_user(self) -> User:
        return User.objects.create_user(username=self.unique("fresh"), password="pw-for-tests-123")

    def fresh_membership(self, which: str) -> Membership:
        return Membership.objects.create(user=self.fresh_user(), team=self.team(which), role="viewer")

    def fresh_token(self, owner: User) -> ApiToken:
        _, prefix, key_hash = ApiToken.generate()
        return ApiToken.objects.create(user=owner, name=self.unique("tok"), prefix=prefix, key_hash=key_hash,
                                       scopes=["read", "write"], expires_at=timezone.now() + timedelta(days=1))

    def token_for(self, which: str, role: str) -> ApiToken:
        me = self.users[role] or self.member_a
        return self.fresh_token(me if which == "own" else self.member_b)

    def api_client(self, role: str) -> APIClient:
        user = self.users[role]
        if user is None:
            return APIClient()
        if role not in self.bearer:
            full, prefix, key_hash = ApiToken.generate()
            ApiToken.objects.create(user=user, name="matrix", prefix=prefix, key_hash=key_hash,
                                    scopes=["read", "write"], expires_at=timezone.now() + timedelta(days=1))
            self.bearer[role] = full
        return APIClient(HTTP_AUTHORIZATION=f"Bearer {self.bearer[role]}")

    def page_client(self, role: str, fresh: bool = False) -> Client:
        """A signed-in browser for the role; reused within a test unless the request may end the session."""
        if fresh or role not in self.browsers:
            client = Client()
            if self.users[role] is not None:
                client.force_login(self.users[role])
            if fresh:
                return client
            self.browsers[role] = client
        return self.browsers[role]


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    """Built once for the module inside a transaction that is rolled back at its end; each test runs in a
    savepoint within it (pytest-django's own), so what a test changes is undone before the next one."""
    with django_db_blocker.unblock(), transaction.atomic():
        a = Team.objects.create(name="Team A", slug="team-a")
        b = Team.objects.create(name="Team B", slug="team-b")

        def user(username, team=None, role=None, **kw):
            u = User.objects.create_user(username=username, password="pw-for-tests-123", **kw)
            if role:
                Membership.objects.create(user=u, team=team, role=role)
            return u

        users: dict[str, User | None] = {"anonymous": None}
        for role in ROLES[1:-1]:
            users[role] = user(role, a, role)
        users["platform_admin"] = user("platform_admin", is_platform_admin=True)
        events = {which: audit_event_record(actor=Actor.system("matrix"), verb="thing.done", target="thing",
                                            target_id=1, target_repr="t", team_id=team.pk).seq
                  for which, team in (("own", a), ("other", b))}
        w = World(a=a, b=b, users=users, member_a=user("member_a", a, "viewer"),
                  member_b=user("member_b", b, "team_admin"), events=events)
        for role in ROLES:  # sign everyone in once, API tokens and browser sessions
            w.api_client(role)
            w.page_client(role)
        yield w
        transaction.set_rollback(True)


# How to call each pattern: (world, method, which, role) -> (path, data)
def _static(name):
    return lambda w, m, which, role: (reverse(name), None)


def _deployment_read(name: str):
    """A read of a fresh deployment of the team (see _deployment below)."""
    return lambda w, m, which, role: (reverse(name, args=[_deployment(w, which).pk]), None)


REQUESTS = {
    "core:home": _static("core:home"),
    "core:home_counts": _static("core:home_counts"),
    "core:healthz": _static("core:healthz"),
    "core:team_switch": lambda w, m, which, role: (reverse("core:team_switch"), {"team": w.a.pk, "next": "/"}),
    **{f"core:area_{a.key}": _static(f"core:area_{a.key}") for a in AREAS if not a.ready},
    "accounts:login": _static("accounts:login"),
    "accounts:logout": _static("accounts:logout"),
    "accounts:profile": _static("accounts:profile"),
    "accounts:token_list": lambda w, m, which, role: (
        reverse("accounts:token_list"), {"name": w.unique("t"), "scopes": ["read"], "expires_in_days": "7"}),
    "accounts:token_revoke": lambda w, m, which, role: (
        reverse("accounts:token_revoke", args=[w.token_for(which or "own", role).pk]), None),
    "accounts:team_list": lambda w, m, which, role: (
        reverse("accounts:team_list"), {"name": w.unique("Team "), "slug": w.unique("team-")}),
    "accounts:team_detail": lambda w, m, which, role: (
        reverse("accounts:team_detail", args=[w.team(which).pk]),
        {"username": w.fresh_user().username, "role": "viewer"}),
    "accounts:membership_remove": lambda w, m, which, role: (
        reverse("accounts:membership_remove", args=[w.fresh_membership(which or "own").pk]), None),
    "audit:event_list": _static("audit:event_list"),
    "audit:event_detail": lambda w, m, which, role: (reverse("audit:event_detail", args=[w.events[which]]), None),
    # registry pages (objects: _page_* below)
    "registry:model_list": _static("registry:model_list"),
    "registry:register": lambda w, m, which, role: (reverse("registry:register"), {
        "model_name": w.unique("matrix-page-"), "team": w.team(which or "own").pk, "run_id": "not-hex",
        "artifact_path": "model"}),
    "registry:upload": lambda w, m, which, role: (reverse("registry:upload"), {
        "model_name": w.unique("matrix-page-"), "team": w.team(which or "own").pk,
        "file": SimpleUploadedFile("notes.txt", b"not a model")}),
    "registry:model_detail": lambda w, m, which, role: (
        reverse("registry:model_detail", args=[_page_version(w, which).model_id]), None),
    "registry:model_edit": lambda w, m, which, role: (
        reverse("registry:model_edit", args=[_page_version(w, which).model_id]), {"risk_tier": "extreme"}),
    "registry:aliases": lambda w, m, which, role: (
        reverse("registry:aliases", args=[_page_version(w, which).model_id]), {"alias": "staging", "version": 999}),
    "registry:alias_remove": lambda w, m, which, role: (
        reverse("registry:alias_remove", args=[_page_version(w, which).model_id]), {"alias": "staging"}),
    "registry:version_detail": lambda w, m, which, role: (
        reverse("registry:version_detail", args=[_page_version(w, which).pk]), None),
    "registry:card_edit": lambda w, m, which, role: (
        reverse("registry:card_edit", args=[_page_version(w, which).pk]), {"intended_use": "Scoring payments."}),
    "registry:card_export_html": lambda w, m, which, role: (
        reverse("registry:card_export_html", args=[_page_version(w, which).pk]), None),
    "registry:card_export_json": lambda w, m, which, role: (
        reverse("registry:card_export_json", args=[_page_version(w, which).pk]), None),
    "registry:scan_status": lambda w, m, which, role: (
        reverse("registry:scan_status", args=[_page_version(w, which).pk]), None),
    "registry:scan_request": lambda w, m, which, role: (
        reverse("registry:scan_request", args=[_page_version(w, which or "own").pk]), None),
    "registry:version_archive": lambda w, m, which, role: (
        reverse("registry:version_archive", args=[_page_version(w, which).pk]), {"reason": "matrix"}),
    "registry:scan_override": lambda w, m, which, role: (
        reverse("registry:scan_override", args=[_page_blocked_scan(w, which).pk]),
        {"justification": "Reviewed with security: the flagged global is harmless here."}),
    "registry:upload_detail": lambda w, m, which, role: (
        reverse("registry:upload_detail", args=[_failed_upload(w, which).pk]), None),
    "registry:upload_status": lambda w, m, which, role: (
        reverse("registry:upload_status", args=[_failed_upload(w, which).pk]), None),
    "registry:upload_retry": lambda w, m, which, role: (
        reverse("registry:upload_retry", args=[_failed_upload(w, which or "own").pk]), None),
    "registry:experiment_list": _static("registry:experiment_list"),
    "registry:experiment_detail": lambda w, m, which, role: (reverse("registry:experiment_detail", args=["0"]), None),
    "registry:run_detail": lambda w, m, which, role: (reverse("registry:run_detail", args=["a" * 32]), None),
    "registry:run_compare": lambda w, m, which, role: (
        reverse("registry:run_compare") + f"?runs={'a' * 32}&runs={'b' * 32}", None),
    # serving pages (objects: _deployment below)
    "deployments:deployment_list": _static("deployments:deployment_list"),
    "deployments:deployment_create": lambda w, m, which, role: (reverse("deployments:deployment_create"), {
        "name": w.unique("matrix-new-"), "environment": _matrix_environment().pk,
        "model_version": _registry_version(w, which).pk, "strategy": "blue_green"}),
    "deployments:deployment_detail": lambda w, m, which, role: (
        reverse("deployments:deployment_detail", args=[_deployment(w, which).pk]), None),
    "deployments:deployment_status": lambda w, m, which, role: (
        reverse("deployments:deployment_status", args=[_deployment(w, which).pk]), None),
    "deployments:deployment_edit": lambda w, m, which, role: (
        reverse("deployments:deployment_edit", args=[_deployment(w, which).pk]), {"replicas": "2"}),
    "deployments:deployment_rollout": lambda w, m, which, role: _rollout_request(w, which, "deployments"),
    "deployments:deployment_rollback": lambda w, m, which, role: (
        reverse("deployments:deployment_rollback", args=[_deployment(w, which, candidate=True).pk]),
        {"rollback-reason": "matrix"}),
    "deployments:deployment_stop": lambda w, m, which, role: (
        reverse("deployments:deployment_stop", args=[_deployment(w, which or "own").pk]), {"stop-reason": "matrix"}),
    "deployments:deployment_start": lambda w, m, which, role: (
        reverse("deployments:deployment_start", args=[_deployment(w, which or "own", status="stopped").pk]), None),
    "deployments:deployment_try": lambda w, m, which, role: (
        reverse("deployments:deployment_try", args=[_deployment(w, which or "own").pk]),
        {"payload": '{"inputs": [[1.0, 2.0]]}'}),
    "deployments:key_list": lambda w, m, which, role: (
        reverse("deployments:key_list", args=[_deployment(w, which).pk]), {"name": "matrix"}),
    "deployments:key_revoke": lambda w, m, which, role: (
        reverse("deployments:key_revoke", args=[(k := _deployment_key(w, which or "own")).deployment_id, k.pk]),
        None),
    "deployments:replica_output": lambda w, m, which, role: (
        reverse("deployments:replica_output", args=[(r := _replica(w, which)).variant.deployment_id, r.pk]), None),
    "deployments:environment_list": _static("deployments:environment_list"),
    "deployments:environment_create": lambda w, m, which, role: (
        reverse("deployments:environment_create"), {"name": w.unique("matrix-env-"), "backend": "local",
                                                    "backend_settings": "{}"}),
    "deployments:environment_edit": lambda w, m, which, role: (
        reverse("deployments:environment_edit", args=[_matrix_environment().pk]),
        {"name": "matrix-dev", "backend": "local", "backend_settings": '{"max_replicas": 2}',
         "description": w.unique("changed ")}),
    "api:api-root": _static("api:api-root"),
    "api:me": _static("api:me"),
    "api:user-list": lambda w, m, which, role: (
        reverse("api:user-list"), {"username": w.unique("u"), "password": "a-long-enough-passphrase-42"}),
    "api:user-detail": lambda w, m, which, role: (
        reverse("api:user-detail", args=[(w.member_a if which == "own" else w.member_b).pk]), None),
    "api:team-list": lambda w, m, which, role: (
        reverse("api:team-list"), {"name": w.unique("Team "), "slug": w.unique("team-")}),
    "api:team-detail": lambda w, m, which, role: (
        reverse("api:team-detail", args=[w.team(which).pk]), {"description": w.unique("changed ")}),
    "api:membership-list": lambda w, m, which, role: (
        reverse("api:membership-list"),
        {"team": w.team(which or "own").pk, "user": w.fresh_user().pk, "role": "viewer"}),
    "api:membership-detail": lambda w, m, which, role: (
        reverse("api:membership-detail", args=[w.fresh_membership(which).pk]), None),
    "api:token-list": lambda w, m, which, role: (reverse("api:token-list"), {"name": w.unique("t")}),
    "api:token-detail": lambda w, m, which, role: (
        reverse("api:token-detail", args=[w.token_for(which, role).pk]), None),
    "api:token-revoke": lambda w, m, which, role: (
        reverse("api:token-revoke", args=[w.token_for(which, role).pk]), None),
    "api:auditevent-list": _static("api:auditevent-list"),
    "api:auditevent-detail": lambda w, m, which, role: (
        reverse("api:auditevent-detail", args=[w.events[which]]), None),
    # registry API
    "api:model-list": lambda w, m, which, role: (
        reverse("api:model-list"), {"team": w.team(which or "own").pk, "name": "bad name!"}),
    "api:model-detail": lambda w, m, which, role: (
        reverse("api:model-detail", args=[_registry_model(w, which).pk]), {"risk_tier": "low"}),
    "api:model-aliases": lambda w, m, which, role: (
        reverse("api:model-aliases", args=[_registry_version(w, which).model_id]),
        {"alias": "staging", "version": 999}),
    "api:model-alias-remove": lambda w, m, which, role: (
        reverse("api:model-alias-remove", kwargs={"pk": _registry_version(w, which).model_id, "alias": "staging"}),
        None),
    "api:version-list": _static("api:version-list"),
    "api:version-detail": lambda w, m, which, role: (
        reverse("api:version-detail", args=[_registry_version(w, which).pk]), None),
    "api:version-register-from-run": lambda w, m, which, role: (
        reverse("api:version-register-from-run"),
        {"model_name": w.unique("matrix-run-"), "run_id": "not-hex", "team": w.team(which).pk}),
    "api:version-upload": lambda w, m, which, role: (
        reverse("api:version-upload"),
        {"file": SimpleUploadedFile("notes.txt", b"not a model"), "model_name": w.unique("matrix-upload-"),
         "team": w.team(which).pk}),
    "api:version-lineage": lambda w, m, which, role: (
        reverse("api:version-lineage", args=[_registry_version(w, which).pk]), None),
    "api:version-card": lambda w, m, which, role: (
        reverse("api:version-card", args=[_registry_version(w, which).pk]), {"intended_use": "Scoring payments."}),
    "api:version-card-export": lambda w, m, which, role: (
        reverse("api:version-card-export", args=[_registry_version(w, which).pk]) + "?as=html", None),
    "api:version-scans": lambda w, m, which, role: (
        reverse("api:version-scans", args=[_registry_version(w, which).pk]), None),
    "api:version-profiles": lambda w, m, which, role: (
        reverse("api:version-profiles", args=[_registry_version(w, which).pk]), {}),
    "api:version-archive": lambda w, m, which, role: (
        reverse("api:version-archive", args=[_registry_version(w, which).pk]), {"reason": "matrix"}),
    "api:scan-detail": lambda w, m, which, role: (
        reverse("api:scan-detail", args=[_registry_blocked_scan(w, which).pk]), None),
    "api:scan-override": lambda w, m, which, role: (
        reverse("api:scan-override", args=[_registry_blocked_scan(w, which).pk]),
        {"justification": "Reviewed with security: the flagged global is harmless here."}),
    "api:upload-list": _static("api:upload-list"),
    "api:upload-detail": lambda w, m, which, role: (
        reverse("api:upload-detail", args=[_failed_upload(w, which).pk]), None),
    "api:upload-retry": lambda w, m, which, role: (
        reverse("api:upload-retry", args=[_failed_upload(w, which).pk]), None),
    "api:mlflow-webhook": _static("api:mlflow-webhook"),
    # serving API
    "api:environment-list": lambda w, m, which, role: (reverse("api:environment-list"),
                                                       {"name": w.unique("matrix-env-")}),
    "api:environment-detail": lambda w, m, which, role: (
        reverse("api:environment-detail", args=[_matrix_environment().pk]), {"description": w.unique("changed ")}),
    "api:deployment-list": lambda w, m, which, role: (reverse("api:deployment-list"), {
        "name": w.unique("matrix-new-"), "environment": _matrix_environment().pk,
        "model_version": _registry_version(w, which or "own").pk}),
    "api:deployment-detail": lambda w, m, which, role: (
        reverse("api:deployment-detail", args=[_deployment(w, which).pk]), {"replicas": 2}),
    "api:deployment-rollout": lambda w, m, which, role: _rollout_request(w, which, "api"),
    "api:deployment-rollback": lambda w, m, which, role: (
        reverse("api:deployment-rollback", args=[_deployment(w, which, candidate=True).pk]), {"reason": "matrix"}),
    "api:deployment-stop": lambda w, m, which, role: (
        reverse("api:deployment-stop", args=[_deployment(w, which).pk]), {"reason": "matrix"}),
    "api:deployment-start": lambda w, m, which, role: (
        reverse("api:deployment-start", args=[_deployment(w, which, status="stopped").pk]), None),
    **{f"api:deployment-{action}": _deployment_read(f"api:deployment-{action}")
       for action in ("events", "variants", "replicas", "metrics")},
    "api:deployment-keys": lambda w, m, which, role: (
        reverse("api:deployment-keys", args=[_deployment(w, which).pk]), {"name": "matrix"}),
    "api:deployment-try-it": lambda w, m, which, role: (
        reverse("api:deployment-try-it", args=[_deployment(w, which).pk]), {"payload": {"inputs": [[1.0, 2.0]]}}),
    "api:deploymentkey-detail": lambda w, m, which, role: (
        reverse("api:deploymentkey-detail", args=[_deployment_key(w, which).pk]), None),
    "api:deploymentkey-revoke": lambda w, m, which, role: (
        reverse("api:deploymentkey-revoke", args=[_deployment_key(w, which).pk]), None),
    "api:replica-detail": lambda w, m, which, role: (reverse("api:replica-detail", args=[_replica(w, which).pk]), None),
    "api:replica-log": lambda w, m, which, role: (reverse("api:replica-log", args=[_replica(w, which).pk]), None),
    "schema": _static("schema"),
    "api-docs": _static("api-docs"),
}


# ---------------------------------------------------------------- registry API: objects made with the ORM (no MLflow)

API_FORMAT = {"api:version-upload": "multipart"}  # the API calls that do not send JSON


def _registry_model(w: World, which: str | None):
    from apps.registry.models import RegisteredModel

    return RegisteredModel.objects.create(team=w.team(which or "own"), name=w.unique("matrix-model-"))


def _registry_version(w: World, which: str | None, status: str = "ready"):
    from apps.registry.models import ModelCard, ModelVersion

    version = ModelVersion.objects.create(model=_registry_model(w, which), version=1, status=status, origin="run")
    ModelCard.objects.create(version=version, revision=1)
    return version


def _registry_blocked_scan(w: World, which: str | None):
    from apps.registry.models import ArtifactScan

    return ArtifactScan.objects.create(version=_registry_version(w, which, status="blocked"), status="blocked",
                                       max_severity="critical")


# ---------------------------------------------------------------- registry pages: ORM rows, and MLflow out of reach

def _page_version(w: World, which: str | None, status: str = "ready"):
    """A fresh model of the team with one version (no scan running) and its card; rows only, nothing in MLflow."""
    from apps.registry.models import ModelCard, ModelVersion, RegisteredModel

    model = RegisteredModel.objects.create(team=w.team(which or "own"), name=w.unique("matrix-page-model-"))
    version = ModelVersion.objects.create(model=model, version=1, status=status, origin="run")
    ModelCard.objects.create(version=version, revision=1)
    return version


def _page_blocked_scan(w: World, which: str | None):
    from apps.registry.models import ArtifactScan

    return ArtifactScan.objects.create(version=_page_version(w, which, status="blocked"), status="blocked",
                                       max_severity="critical")


_UPLOAD_FILES: list = []  # a folder of the module's own (_upload_files), for the stored files of _failed_upload


@pytest.fixture(scope="module", autouse=True)
def _upload_files(tmp_path_factory):
    _UPLOAD_FILES[:] = [tmp_path_factory.mktemp("matrix-uploads")]


def _failed_upload(w: World, which: str | None):
    """A failed upload of the team with its stored file still there (so a retry is possible); rows only."""
    from apps.registry.models import ModelUpload

    path = _UPLOAD_FILES[0] / w.unique("upload-") / "model.pkl"
    path.parent.mkdir()
    path.write_bytes(b"\x80\x04K\x01.")
    return ModelUpload.objects.create(team=w.team(which or "own"), model_name=w.unique("matrix-upload-"),
                                      filename="model.pkl", file_path=str(path), size=5, status="failed",
                                      error="MLflow was down", created_by=w.member_a)


# ---------------------------------------------------------------- serving: ORM rows, and the gateway out of reach

def _matrix_environment():
    from apps.deployments.models import Environment

    return Environment.objects.get_or_create(name="matrix-dev")[0]


def _deployment(w: World, which: str | None, *, status: str = "running", candidate: bool = False):
    """A deployment of the team serving v1 of a fresh model that has a second ready version (v2); with
    ``candidate``, a blue-green rollout to v2 is in progress. Rows only: no replica process, no route."""
    from apps.deployments.models import Deployment, Variant
    from apps.registry.models import ModelVersion

    v1 = _registry_version(w, which)
    ModelVersion.objects.create(model=v1.model, version=2, status="ready", origin="run")
    deployment = Deployment.objects.create(team=w.team(which or "own"), environment=_matrix_environment(),
                                           model=v1.model, name=w.unique("matrix-dep-"),
                                           status="updating" if candidate else status)
    Variant.objects.create(deployment=deployment, name="v1", model_version=v1, weight=100, role="live")
    if candidate:
        Variant.objects.create(deployment=deployment, name="v2", model_version=v1.model.versions.get(version=2),
                               weight=0, role="candidate")
    return deployment


def _rollout_request(w: World, which: str | None, where: str):
    deployment = _deployment(w, which or "own")
    version = deployment.model.versions.get(version=2)
    if where == "api":
        return reverse("api:deployment-rollout", args=[deployment.pk]), {"model_version": version.pk}
    return (reverse("deployments:deployment_rollout", args=[deployment.pk]),
            {"model_version": version.pk, "strategy": "blue_green"})


def _deployment_key(w: World, which: str | None):
    from apps.deployments.models import DeploymentKey

    return DeploymentKey.objects.create(deployment=_deployment(w, which), name="matrix", prefix=w.unique("p"),
                                        key_hash=w.unique("hash-"))


def _replica(w: World, which: str | None):
    from apps.deployments.models import Replica

    return Replica.objects.create(variant=_deployment(w, which).variants.get(), index=0, status="ready", port=1)


@pytest.fixture(autouse=True)
def _gateway_unreachable(settings):
    """The "try it" calls go to a closed port, answered at once: "allowed" is the gateway-down 503."""
    settings.MODELPLANE_GATEWAY_URL = "http://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _mlflow_unreachable(settings, monkeypatch):
    """No request of the matrix may depend on an MLflow that happens to run here (say, a standalone on :5000):
    MLflow is a closed port, answered at once (no client retries), so pages that need it answer 503."""
    settings.MLFLOW_TRACKING_URI = "http://127.0.0.1:1"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")


def _cases():
    for name, methods in TABLE.items():
        for method, spec in methods.items():
            if isinstance(spec, dict):
                for which in ("own", "other"):
                    yield pytest.param(name, method, which, spec[which], id=f"{name}-{method}-{which}")
            else:
                yield pytest.param(name, method, None, spec, id=f"{name}-{method}")


def test_every_table_entry_knows_how_to_call_it():
    assert set(REQUESTS) == set(TABLE)


def _outcome(response) -> object:
    if response.status_code == 302 and response["Location"].startswith(reverse("accounts:login")):
        return LOGIN
    return response.status_code


@pytest.mark.parametrize("name, method, which, expected", list(_cases()))
def test_role_matrix(world, name, method, which, expected):
    mismatches = []
    is_api = name.startswith("api:")
    for role, want in zip(ROLES, expected):
        path, data = REQUESTS[name](world, method, which, role)
        client = world.api_client(role) if is_api else world.page_client(role, fresh=name == "accounts:logout")
        call = getattr(client, method.lower())
        if method == "GET":
            response = call(path)
        elif is_api:
            response = call(path, data or {}, format=API_FORMAT.get(name, "json"))
        else:
            response = call(path, data or {})
        got = _outcome(response)
        if got != want:
            mismatches.append(f"{role}: expected {want}, got {got} ({response.content[:160]!r})")
    assert not mismatches, f"{method} {name} ({which or 'no object'}):\n  " + "\n  ".join(mismatches)


def test_team_switch_only_switches_to_own_teams(world):
    client = world.page_client("viewer")
    client.post(reverse("core:team_switch"), {"team": world.b.pk, "next": "/"})
    assert client.session.get("current_team_id") is None
    client.post(reverse("core:team_switch"), {"team": world.a.pk, "next": "https://evil.example/"})
    assert client.session["current_team_id"] == world.a.pk
    response = client.post(reverse("core:team_switch"), {"team": world.a.pk, "next": "https://evil.example/"})
    assert response["Location"] == "/"


def test_not_yet_areas_refuse_a_user_without_the_verb(make_user):
    """A signed-in user in no team holds no area verb: the "not yet" pages and the audit trail refuse them."""
    loner = make_user("loner")
    client = Client()
    client.force_login(loner)
    for area in AREAS:
        if area.key in ("home", "admin"):
            continue
        assert client.get(reverse(area.url_name)).status_code == 403, area.key
    assert client.get(reverse("core:home")).status_code == 200


# ---------------------------------------------------------------- navigation

ALL_AREAS = ["home", "models", "deployments", "approvals", "monitoring", "costs", "audit", "admin"]
# Admin (teams and roles) is for those who manage members; other members reach their teams from Profile.
NO_AUDIT = [a for a in ALL_AREAS if a not in ("audit", "admin")]
AUDIT_NO_ADMIN = [a for a in ALL_AREAS if a != "admin"]
EXPECTED_NAV = {
    "viewer": NO_AUDIT,
    "data_scientist": NO_AUDIT,
    "ml_engineer": NO_AUDIT,
    "approver": AUDIT_NO_ADMIN,
    "risk_officer": AUDIT_NO_ADMIN,
    "team_admin": ALL_AREAS,
    "platform_admin": ALL_AREAS,
}


def test_every_area_is_covered_by_the_navigation_table():
    assert [a.key for a in AREAS] == ALL_AREAS
    for role, verbs in ROLE_VERBS.items():  # the table agrees with the verbs each role holds
        shown = [a.key for a in AREAS if a.key == "home" or a.verb in verbs]
        assert shown == EXPECTED_NAV[role], role


@pytest.mark.parametrize("role", ROLES[1:])
def test_navigation_per_role(world, role):
    user = world.users[role]
    items = navigation_for(Actor.for_user(user), "/")
    assert [i["key"] for i in items] == EXPECTED_NAV[role]
    assert [i["key"] for i in items if i["active"]] == ["home"]
    client = world.page_client(role)
    home = client.get("/").content.decode()
    for key in ALL_AREAS:
        assert (f'data-nav="{key}"' in home) == (key in EXPECTED_NAV[role]), key
    for item in items:  # the navigation never leads to a page that refuses the user
        assert client.get(item["url"]).status_code == 200, item["url"]


def test_navigation_marks_the_current_area(world):
    items = navigation_for(Actor.for_user(world.users["team_admin"]), "/audit/12/")
    assert [i["key"] for i in items if i["active"]] == ["audit"]


def test_navigation_for_a_user_in_no_team(make_user):
    loner = make_user("loner")
    assert [i["key"] for i in navigation_for(Actor.for_user(loner), "/")] == ["home"]

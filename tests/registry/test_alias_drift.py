"""Aliases moved straight in MLflow, against the real MLflow server: the sync puts production aliases back
(the approval gate cannot be bypassed through MLflow) and adopts the others into the alias history."""
from __future__ import annotations

import pytest
from django.db import transaction
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.core.actors import Actor
from apps.registry import mlflow_adapter as mlf
from apps.registry import services
from apps.registry.models import AliasAssignment, ModelVersion

pytestmark = pytest.mark.django_db

SYNC = Actor.system("registry-sync")


@pytest.fixture
def scientist(make_user, teams, actor_for):
    return actor_for(make_user("sci", team=teams[0], roles=("data_scientist",)))


@pytest.fixture
def three_versions(scientist, teams, logged_run, unique):
    """A model with versions 1, 2 and 3, all ready (their scans are not what these tests are about)."""
    name = f"{unique}-drift"
    versions = [services.modelversion_register_from_run(actor=scientist, model_name=name, run_id=logged_run,
                                                        team_id=teams[0].pk) for _ in range(3)]
    ModelVersion.objects.filter(pk__in=[v.pk for v in versions]).update(status=ModelVersion.Status.READY)
    return versions[0].model


def _promote(model, alias: str, number: int) -> None:
    """What an approved promotion does (the Approvals step): our row and MLflow, through the one alias mover."""
    with transaction.atomic():
        services._alias_move(actor=Actor.system("promotion"), model=model, alias=alias,
                             version=model.versions.get(version=number))


def _held(model) -> dict[str, int]:
    return dict(AliasAssignment.objects.filter(model=model, removed_at__isnull=True)
                .values_list("alias", "version__version"))


def test_champion_moved_in_mlflow_is_put_back_with_an_audit_event(three_versions, scientist):
    model = three_versions
    _promote(model, "champion", 1)
    mlf.client().set_registered_model_alias(model.name, "champion", "3")  # someone bypasses the approval gate
    assert mlf.registered_model_aliases(model.name)["champion"] == 3

    report = services.registry_sync(actor=SYNC)

    assert mlf.registered_model_aliases(model.name)["champion"] == 1
    assert _held(model) == {"champion": 1}
    assert f"{model.name}@champion: MLflow v3 -> v1" in report["aliases_reverted"]
    event = AuditEvent.objects.get(verb="alias.drift_reverted", target_id=str(model.pk))
    assert event.actor_kind == "system" and event.actor_name == "registry-sync"
    assert event.before == {"alias": "champion", "version": 3, "held_by": "mlflow"}
    assert event.after == {"alias": "champion", "version": 1, "held_by": "modelplane"}
    assert "approved promotion" in event.reason
    # settled: a second pass finds nothing to do
    again = services.registry_sync(actor=SYNC)
    assert not again["aliases_reverted"] and not again["aliases_adopted"]
    assert AuditEvent.objects.filter(verb="alias.drift_reverted", target_id=str(model.pk)).count() == 1


def test_production_alias_deleted_or_added_in_mlflow_is_put_back(three_versions):
    model = three_versions
    _promote(model, "champion", 2)
    c = mlf.client()
    c.delete_registered_model_alias(model.name, "champion")
    c.set_registered_model_alias(model.name, "production", "3")  # we hold no production alias at all

    services.registry_sync(actor=SYNC)

    assert mlf.registered_model_aliases(model.name) == {"champion": 2}
    events = {e.before["alias"]: e for e in AuditEvent.objects.filter(verb="alias.drift_reverted",
                                                                      target_id=str(model.pk))}
    assert events["champion"].before["version"] is None and events["champion"].after["version"] == 2
    assert events["production"].before["version"] == 3 and events["production"].after["version"] is None
    assert "deleted" in events["champion"].reason and "set" in events["production"].reason


def test_non_production_alias_moved_in_mlflow_is_adopted_with_history(three_versions, scientist):
    model = three_versions
    services.alias_set(actor=scientist, model_id=model.pk, alias="challenger", version=1)
    mlf.client().set_registered_model_alias(model.name, "challenger", "2")

    report = services.registry_sync(actor=SYNC)

    assert f"{model.name}@challenger: v1 -> v2" in report["aliases_adopted"]
    assert mlf.registered_model_aliases(model.name)["challenger"] == 2  # MLflow keeps its change
    history = list(AliasAssignment.objects.filter(model=model, alias="challenger").order_by("assigned_at"))
    assert [(a.version.version, a.removed_at is None) for a in history] == [(1, False), (2, True)]
    assert history[0].assigned_by == scientist.user and history[1].assigned_by is None
    event = AuditEvent.objects.get(verb="alias.drift_adopted", target_id=str(model.pk))
    assert event.actor_kind == "system"
    assert (event.before["version"], event.after["version"]) == (1, 2)

    # deleted in MLflow: our open row closes
    mlf.client().delete_registered_model_alias(model.name, "challenger")
    services.registry_sync(actor=SYNC)
    assert "challenger" not in _held(model)
    assert AuditEvent.objects.filter(verb="alias.drift_adopted", target_id=str(model.pk)).count() == 2


def test_non_production_alias_on_a_blocked_version_is_put_back_and_a_pending_one_waits(three_versions):
    model = three_versions
    ModelVersion.objects.filter(model=model, version=2).update(status=ModelVersion.Status.BLOCKED)
    ModelVersion.objects.filter(model=model, version=3).update(status=ModelVersion.Status.PENDING_SCAN)
    c = mlf.client()
    c.set_registered_model_alias(model.name, "shadow", "2")
    c.set_registered_model_alias(model.name, "canary", "3")

    report = services.registry_sync(actor=SYNC)

    assert mlf.registered_model_aliases(model.name) == {"canary": 3}  # shadow deleted again, canary untouched
    assert _held(model) == {}
    event = AuditEvent.objects.get(verb="alias.drift_reverted", target_id=str(model.pk))
    assert event.before == {"alias": "shadow", "version": 2, "held_by": "mlflow"} and "blocked" in event.reason
    assert any("canary" in item for item in report["aliases_deferred"])
    # once the scan passes, the next pass adopts it
    ModelVersion.objects.filter(model=model, version=3).update(status=ModelVersion.Status.READY)
    services.registry_sync(actor=SYNC)
    assert _held(model) == {"canary": 3}


def test_model_page_shows_reverted_drift(three_versions, client, make_user, teams):
    model = three_versions
    _promote(model, "champion", 1)
    mlf.client().set_registered_model_alias(model.name, "champion", "2")
    services.registry_sync(actor=SYNC)
    viewer = make_user("viewer", team=teams[0], roles=("viewer",))
    client.force_login(viewer)
    page = client.get(reverse("registry:model_detail", args=[model.pk])).content.decode()
    assert "data-alias-drift" in page and 'data-drift="alias.drift_reverted"' in page
    assert "Put back in MLflow" in page
    # another team's member sees neither the model nor its drift
    outsider = make_user("outsider", team=teams[1], roles=("viewer",))
    client.force_login(outsider)
    assert client.get(reverse("registry:model_detail", args=[model.pk])).status_code == 404

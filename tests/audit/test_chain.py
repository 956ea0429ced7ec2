"""The audit trail: recorded in the service's transaction, hash-chained, append-only in PostgreSQL."""
import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.utils import InternalError, ProgrammingError

from apps.accounts import services
from apps.audit.models import AuditEvent
from apps.audit.services import audit_chain_verify, audit_event_record
from apps.core.actors import Actor

pytestmark = pytest.mark.django_db


def _events(n: int) -> list[AuditEvent]:
    actor = Actor.system("test")
    for i in range(n):
        services.team_create(actor=actor, name=f"Team {i}", slug=f"team-{i}")
    return list(AuditEvent.objects.order_by("seq"))


def test_chain_links_each_event_to_the_one_before():
    events = _events(3)
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev_hash == "0" * 64
    assert events[1].prev_hash == events[0].hash and events[2].prev_hash == events[1].hash
    assert audit_chain_verify().ok and audit_chain_verify().checked == 3


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    with pytest.raises(RuntimeError):
        audit_event_record(actor=Actor.system(), verb="x.y", target="thing", target_id=1, target_repr="t")


@pytest.mark.parametrize("sql", [
    "UPDATE audit_auditevent SET verb = 'forged'",
    "DELETE FROM audit_auditevent",
    "TRUNCATE audit_auditevent",
])
def test_postgresql_refuses_update_delete_truncate(sql):
    _events(1)
    with pytest.raises((InternalError, ProgrammingError, IntegrityError)) as caught:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert "append-only" in str(caught.value)
    assert AuditEvent.objects.count() == 1


def _lift_trigger():
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")


def _verify_broken_at(seq: int, word: str):
    report = audit_chain_verify()
    assert not report.ok
    assert report.broken_seq == seq, str(report)
    assert word in report.problem
    with pytest.raises(Exception) as caught:
        call_command("audit_verify")
    assert f"#{seq}" in str(caught.value)


def test_edited_event_is_detected():
    _events(4)
    _lift_trigger()
    AuditEvent.objects.filter(seq=2).update(after={"name": "Forged"})
    _verify_broken_at(2, "edited")


def test_deleted_event_is_detected():
    _events(4)
    _lift_trigger()
    AuditEvent.objects.filter(seq=2).delete()
    _verify_broken_at(3, "missing or inserted")


def test_deleted_event_with_renumbering_is_detected():
    _events(4)
    _lift_trigger()
    AuditEvent.objects.filter(seq=2).delete()
    for seq in (3, 4):
        AuditEvent.objects.filter(seq=seq).update(seq=seq - 1)
    _verify_broken_at(2, "prev_hash")


def test_inserted_event_is_detected():
    events = _events(3)
    _lift_trigger()
    for seq in (3, 2):
        AuditEvent.objects.filter(seq=seq).update(seq=seq + 1)
    forged = AuditEvent(**{f: getattr(events[1], f) for f in AuditEvent.HASHED_FIELDS})
    forged.seq = 2
    forged.verb = "team.deleted"
    forged.prev_hash = events[0].hash
    forged.hash = forged.compute_hash(events[0].hash)
    forged.save(force_insert=True)
    _verify_broken_at(3, "prev_hash")


def test_reordered_events_are_detected():
    _events(4)
    _lift_trigger()
    AuditEvent.objects.filter(seq=2).update(seq=-2)
    AuditEvent.objects.filter(seq=3).update(seq=2)
    AuditEvent.objects.filter(seq=-2).update(seq=3)
    _verify_broken_at(2, "prev_hash")


def test_audit_verify_command_reports_ok(capsys):
    _events(2)
    call_command("audit_verify")
    assert "OK: 2 events" in capsys.readouterr().out

"""The serving pages in a real browser, against the real web server: an ML engineer creates a deployment through
the form and lands on its page, which follows the deployment as it changes; a viewer sees the page without any
action. No model server runs here (the reconcile the service queues finds no worker in this session): the test
moves the deployment as the reconciler would, through ``manage.py shell``, and watches the page catch up."""
from __future__ import annotations

import json
import re
import uuid

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EXAMPLE = {"columns": ["amount", "age"], "data": [[12.5, 40.0]]}


def _ready_version(server, model_name: str) -> int:
    """A ready (scanned) version of a fraud-team model, as registering and a passed scan leave it: rows only."""
    out = server.manage_shell(f"""
import json
from apps.accounts.models import Team
from apps.registry.models import ModelVersion, RegisteredModel
model = RegisteredModel.objects.create(team=Team.objects.get(slug="fraud"), name={model_name!r}, latest_version=1)
version = ModelVersion.objects.create(model=model, version=1, origin="run", status="ready",
                                      input_example=json.loads({json.dumps(EXAMPLE)!r}))
print("VERSION", version.pk)
""")
    return int(re.search(r"VERSION (\d+)", out).group(1))


def test_engineer_creates_a_deployment_and_its_page_follows_it(signed_in, server, shot):
    model_name = f"e2e-serve-{uuid.uuid4().hex[:6]}"
    name = f"{model_name}-api"
    version_id = _ready_version(server, model_name)

    page = signed_in("engineer")
    page.goto("/deployments/")
    expect(page.locator("h1")).to_have_text("Deployments")
    expect(page.locator("[data-nav=deployments]")).to_have_attribute("aria-current", "page")
    page.locator("[data-new-deployment]").click()
    page.wait_for_url(re.compile(r"/deployments/new/$"))
    page.get_by_label("Name").fill(name)
    page.get_by_label("Environment").select_option(label="dev")
    page.get_by_label("Registered model").select_option(label=model_name)
    page.get_by_label("Model version").select_option(str(version_id))
    expect(page.locator('[data-strategy-help="direct"]')).to_contain_text("requests may fail during the switch")
    page.locator("[data-strategy-choice] input[value=blue_green]").check()
    page.get_by_label("Replicas", exact=True).fill("2")
    shot(page, "deployment-create")
    page.locator("[data-create-submit]").click()

    # The deployment's page: its status, its version and the timeline's first entry.
    page.wait_for_url(re.compile(r"/deployments/\d+/$"))
    deployment_url = page.url
    expect(page.locator("h1")).to_contain_text(name)
    expect(page.locator(".message.success")).to_contain_text("created")
    expect(page.locator("h1 [data-status]")).to_have_text("pending")
    expect(page.locator("[data-status-section]")).to_contain_text("0 of 2 live replicas ready")
    expect(page.locator('[data-variants] [data-variant="v1"]')).to_contain_text(f"{model_name} v1")
    expect(page.locator('[data-events] [data-event="created"]')).to_contain_text("Created in dev")
    expect(page.locator("[data-gateway-url=mlflow]")).to_contain_text(f"/v1/deployments/{name}/invocations")
    expect(page.locator("[data-charts-empty]")).to_contain_text("No traffic in the last hour")
    expect(page.locator("[data-stop-form]")).to_be_visible()
    expect(page.locator("[data-try-payload]")).to_have_value(re.compile(r'"dataframe_split"'))
    shot(page, "deployment-pending")

    # The reconciler brings the replicas up (as the worker would write it): the page shows it without a reload.
    server.manage_shell(f"""
from apps.core.actors import Actor
from apps.deployments.models import Deployment, Replica
from apps.deployments.services import deployment_event_add
d = Deployment.objects.get(name={name!r})
v = d.variants.get(role="live")
for i in range(2):
    Replica.objects.create(variant=v, index=i, status="ready", port=31000 + i, pid=7000 + i)
Deployment.objects.filter(pk=d.pk).update(status="running", status_message="Running: v1, 2 of 2 replicas ready.")
deployment_event_add(deployment=d, kind="running", message="Running: v1, 2 of 2 replicas ready.",
                     actor=Actor.system("reconciler"))
# Two minutes of traffic, as the prediction log's ingest rolls it up.
from datetime import timedelta
from django.utils import timezone
from apps.monitoring.models import LATENCY_BUCKETS_MS, PredictionRollup
now = timezone.now().replace(second=0, microsecond=0)
for ago, count, errors in ((3, 120, 0), (2, 90, 3)):
    histogram = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    histogram[2] = count
    PredictionRollup.objects.create(deployment_id=d.pk, variant="v1", minute=now - timedelta(minutes=ago),
                                    count=count, sampled=count, errors=errors, client_errors=0,
                                    latency_sum_ms=count * 4.0, latency_max_ms=9.0, latency_histogram=histogram)
""")
    expect(page.locator("h1 [data-status]")).to_have_text("running", timeout=20_000)
    expect(page.locator("[data-status-section]")).to_contain_text("2 of 2 live replicas ready")
    expect(page.locator('[data-events] [data-event="running"]')).to_be_visible()
    expect(page.locator("[data-replicas] [data-replica-status=ready]")).to_have_count(2)
    # The traffic charts came with the refreshed sections: Plotly is loaded then, and draws all three.
    expect(page.locator("[data-deployment-chart][data-rendered]")).to_have_count(3, timeout=20_000)
    expect(page.locator("#chart-requests .bars path")).not_to_have_count(0)
    assert page.url == deployment_url  # followed in place, not reloaded elsewhere

    # "Try it": whatever the gateway says (or that it is down), the box shows it; never a stack trace.
    page.locator("[data-try-send]").click()
    expect(page.locator("[data-try-result]")).to_have_attribute("data-try-outcome", re.compile(r".+"),
                                                               timeout=40_000)
    expect(page.locator("[data-try-result]")).not_to_contain_text("Traceback")
    shot(page, "deployment-running")

    # Keys: the new key is shown once.
    page.locator("[data-keys-link]").click()
    page.get_by_label("Name").fill("checkout")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("[data-new-key-value]")).to_contain_text("mpk_")
    page.goto(page.url)
    expect(page.locator("[data-new-key]")).to_have_count(0)
    expect(page.locator("[data-key-table] [data-key-state=active]")).to_have_count(1)


def test_viewer_sees_a_deployment_without_actions(signed_in, server, shot):
    model_name = f"e2e-view-{uuid.uuid4().hex[:6]}"
    version_id = _ready_version(server, model_name)
    out = server.manage_shell(f"""
from apps.accounts.models import User
from apps.core.actors import Actor
from apps.deployments.models import Environment
from apps.deployments.services import deployment_create
d = deployment_create(actor=Actor.for_user(User.objects.get(username="engineer")), name={model_name + "-api"!r},
                      environment_id=Environment.objects.get(name="dev").pk, model_version_id={version_id})
print("DEPLOYMENT", d.pk)
""")
    deployment_id = int(re.search(r"DEPLOYMENT (\d+)", out).group(1))
    page = signed_in("viewer")
    page.goto("/deployments/")
    expect(page.locator("[data-new-deployment]")).to_have_count(0)
    expect(page.locator(f'[data-deployment="{model_name}-api"]')).to_be_visible()
    page.goto(f"/deployments/{deployment_id}/")
    expect(page.locator("h1")).to_contain_text(f"{model_name}-api")
    expect(page.locator("h1 [data-status]")).to_have_text("pending")
    expect(page.locator('[data-events] [data-event="created"]')).to_be_visible()
    for marker in ("[data-actions-section]", "[data-rollout-form]", "[data-rollback-form]", "[data-stop-form]",
                   "[data-try-form]", "[data-edit-settings]"):
        expect(page.locator(marker)).to_have_count(0)
    page.locator("[data-keys-link]").click()
    expect(page.locator("[data-key-form]")).to_have_count(0)
    shot(page, "deployment-viewer")

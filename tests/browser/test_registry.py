"""The registry pages in a real browser, against the real web server and the session's real MLflow: registering by
upload with progress (and the upload's page following the worker), the version page (scan, card, lineage), aliases, what a viewer is offered, and browsing
experiments with a Plotly comparison chart."""
from __future__ import annotations

import pickle
import re
import uuid

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def _big_sklearn_pickle(path) -> int:
    """A real scikit-learn model, pickled, made large (8 MB of coefficients) so that the upload takes a while."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.9], [0.8, 0.1]]), [0, 1, 0, 1])
    model.coef_ = np.zeros((1, 1_000_000))
    model.n_features_in_ = 1_000_000
    path.write_bytes(pickle.dumps(model, protocol=4))
    return path.stat().st_size


def _throttle_uploads(page, bytes_per_second: int) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": bytes_per_second})


def test_data_scientist_registers_by_upload_and_sets_an_alias(signed_in, server, shot, tmp_path):
    name = f"e2e-upload-{uuid.uuid4().hex[:6]}"
    model_file = tmp_path / "fraud-model.pkl"
    size = _big_sklearn_pickle(model_file)
    page = signed_in("scientist")
    page.goto("/models/")
    page.locator("[data-register-button]").first.click()
    page.wait_for_url(re.compile(r"/models/register/$"))
    page.locator("[data-upload-tab]").click()
    page.wait_for_url(re.compile(r"/models/upload/$"))
    page.get_by_label("Model name").fill(name)
    page.get_by_label("Risk tier (new model)").select_option("low")
    page.get_by_label("Description").fill("Scores card payments for fraud.")
    page.get_by_label("Model file").set_input_files(str(model_file))
    shot(page, "registry-upload-form")

    _throttle_uploads(page, 2_000_000)  # ~4 s for the file: long enough to watch the bar move
    page.locator("[data-upload-submit]").click()
    progress = page.locator("[data-upload-progress]")
    expect(progress).to_be_visible()
    page.wait_for_function("""() => {
        const p = document.querySelector('[data-upload-progress]');
        const pct = p && parseInt(p.getAttribute('data-percent') || '0', 10);
        return pct > 0 && pct < 100;
    }""", timeout=15_000)
    expect(page.locator("[data-upload-progress-text]")).to_contain_text("Uploaded")
    expect(page.locator("[data-upload-submit]")).to_be_disabled()
    shot(page, "registry-upload-progress", full_page=False)
    # The upload's page: the file is stored, a worker logs it to MLflow; the page follows it by itself.
    page.wait_for_url(re.compile(r"/models/uploads/\d+/$"), timeout=60_000)
    expect(page.locator(".message.success")).to_contain_text("It is being logged to MLflow")
    expect(page.locator("[data-upload-status]")).to_have_text("received")
    expect(page.locator("[data-upload-pending]")).to_be_visible()
    shot(page, "registry-upload-received")
    upload_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    outcome = server.manage_shell(  # what the worker runs: the real task, on the server's database and MLflow
        f"from apps.registry.tasks import process_upload; print(process_upload({upload_id}))", timeout=180)
    assert outcome.strip().endswith("registered"), outcome
    expect(page.locator("[data-upload-status]")).to_have_text("registered", timeout=30_000)
    shot(page, "registry-upload-registered")
    page.locator("[data-upload-version]").click()
    page.wait_for_url(re.compile(r"/models/versions/\d+/$"))

    # The version page: the scan is pending (and said so), the card says what the low tier still needs.
    expect(page.locator("h1")).to_contain_text(name)
    expect(page.locator("[data-scan-section]")).to_be_visible()
    expect(page.locator("[data-scan-pending]")).to_be_visible()
    expect(page.locator("h1 [data-status]")).to_have_text("scan pending")
    card = page.locator("[data-card-section]")
    expect(card).to_be_visible()
    expect(card.locator("[data-card-missing]")).to_contain_text("Intended use")
    expect(page.locator("[data-lineage-facts]")).to_contain_text("fraud-model.pkl")
    shot(page, "registry-version-pending")

    # The artifact scan runs as the worker runs it (the real task and scanner), and the page, which polls,
    # shows the verdict without a reload by hand.
    version_url = page.url
    status = page.request.get(version_url + "scan/").json()
    assert status["scan"]["status"] == "queued"
    outcome = server.manage_shell(
        f"from apps.registry.tasks import run_artifact_scan; print(run_artifact_scan({status['scan']['id']}))")
    assert outcome.strip().endswith("passed"), outcome
    expect(page.locator("[data-scan-result]")).to_have_attribute("data-scan-result", "passed", timeout=30_000)
    expect(page.locator("h1 [data-status]")).to_have_text("ready")
    assert page.request.get(version_url + "scan/").json()["status"] == "ready"

    # Aliases: a production alias is refused with the reason; staging is set and shows in the history.
    aliases = page.locator("[data-alias-section]")
    aliases.get_by_label("Alias").fill("champion")
    aliases.get_by_role("button", name="Set alias").click()
    expect(page.locator('[data-field-error="alias"]')).to_contain_text("promotion")
    expect(page.locator(".form-errors")).to_contain_text("Ask for a promotion instead")
    shot(page, "registry-alias-refused")
    page.get_by_label("Alias").fill("staging")
    with page.expect_navigation(timeout=30_000):  # MLflow sets the alias too
        page.get_by_role("button", name="Set alias").click(no_wait_after=True)
    assert page.url.startswith(version_url), "the form returns to the version page it came from"
    expect(page.locator(".message.success")).to_contain_text("staging now points at")
    expect(page.locator("[data-version-aliases]")).to_contain_text("staging")
    expect(page.locator("[data-alias-history] tbody tr")).to_have_count(1)
    expect(page.locator("[data-alias-history]")).to_contain_text("now")
    shot(page, "registry-version-ready")

    # The model list finds it by name, with its alias and status.
    page.goto(f"/models/?q={name}")
    row = page.locator(f'[data-model="{name}"]')
    expect(row).to_contain_text("staging")
    expect(row).to_contain_text("ready")
    assert size > 7_000_000

    # On a phone the version page reflows: nothing scrolls sideways but the tables inside their cards.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(version_url)
    width, viewport = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= viewport, f"the version page is {width}px wide in a {viewport}px viewport"
    shot(page, "registry-version-mobile")


def test_viewer_is_not_offered_registering_and_is_refused(signed_in, shot):
    page = signed_in("viewer")
    page.goto("/models/")
    expect(page.locator("h1")).to_have_text("Models")
    expect(page.locator("[data-register-button]")).to_have_count(0)
    expect(page.locator('[data-subnav="register"]')).to_have_count(0)
    expect(page.locator('[data-subnav="experiments"]')).to_have_count(0)  # experiment.view is for builders
    shot(page, "registry-models-viewer")
    for path in ("/models/register/", "/models/upload/"):
        response = page.goto(path)
        assert response.status == 403, path
        expect(page.locator("h1")).to_have_text("Not allowed")
        expect(page.locator("main")).to_contain_text("model.register")


def test_experiments_list_the_runs_and_compare_them_in_a_chart(signed_in, server, shot):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.mlflow_uri)
    experiment = f"e2e-experiment-{uuid.uuid4().hex[:6]}"
    experiment_id = client.create_experiment(experiment)
    run_ids = []
    for run_name, c, curve in (("baseline", "1.0", [0.70, 0.78, 0.81]), ("tuned", "0.3", [0.72, 0.85, 0.91])):
        run = client.create_run(experiment_id, run_name=run_name)
        client.log_param(run.info.run_id, "C", c)
        for step, value in enumerate(curve):
            client.log_metric(run.info.run_id, "accuracy", value, step=step)
        client.log_metric(run.info.run_id, "auc", curve[-1] + 0.05)
        client.set_terminated(run.info.run_id)
        run_ids.append(run.info.run_id)

    page = signed_in("scientist")
    page.goto("/models/")
    page.locator('[data-subnav="experiments"]').click()
    page.wait_for_url(re.compile(r"/models/experiments/$"))
    page.get_by_label("Name contains").fill(experiment)
    page.get_by_role("button", name="Search").click()
    page.locator(f'[data-experiment="{experiment}"] a').first.click()
    page.wait_for_url(re.compile(rf"/models/experiments/{experiment_id}/$"))
    for run_id in run_ids:
        expect(page.locator(f'[data-run="{run_id}"]')).to_be_visible()
    expect(page.locator("[data-run-table]")).to_contain_text("baseline")
    compare = page.locator("[data-compare-button]")
    expect(compare).to_be_disabled()
    for run_id in run_ids:
        page.locator(f'[data-run="{run_id}"] input[type=checkbox]').check()
    expect(compare).to_be_enabled()
    shot(page, "registry-experiment")
    compare.click()
    page.wait_for_url(re.compile(r"/models/runs/compare/\?"))
    charts = page.locator("[data-compare-chart]")
    expect(charts).to_have_count(2)
    for i in range(2):
        expect(charts.nth(i)).to_have_attribute("data-rendered", "1")
        expect(charts.nth(i).locator(".main-svg").first).to_be_visible()  # Plotly drew it
    expect(page.locator("[data-compare-params] tr.differs")).to_contain_text("C")
    shot(page, "registry-compare")

    page.goto(f"/models/runs/{run_ids[1]}/")
    expect(page.locator("h1")).to_contain_text("tuned")
    expect(page.locator("[data-metrics]")).to_contain_text("accuracy")
    assert f"#/experiments/{experiment_id}/runs/{run_ids[1]}" in page.locator(
        "[data-mlflow-link]").get_attribute("href")
    shot(page, "registry-run")

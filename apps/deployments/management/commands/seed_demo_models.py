"""Demo models that really serve: train two small scikit-learn models, log them to MLflow, register them through
the registry's services (so they are scanned like any other), and deploy the fraud model to ``dev``.

Standalone runs this in the background once MLflow and the worker are up (it takes a minute: training and
logging a few seconds, the scan, then a model server starting). Safe to run again: what exists is left alone.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

FRAUD_MODEL = "fraud-detector"
RECS_MODEL = "recs-ranker"
DEMO_DEPLOYMENT = "fraud-detector-dev"


def _train_and_log(name: str, experiment: str, seed: int, columns: list[str], versions: int) -> list[str]:
    """Log ``versions`` runs of a logistic regression on synthetic data; return their run ids."""
    import mlflow
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    mlflow.set_experiment(experiment)
    run_ids = []
    for n in range(versions):
        rng = np.random.default_rng(seed + n)
        frame = pd.DataFrame({c: rng.normal(0, 1, 400) for c in columns})
        frame[columns[0]] = (frame[columns[0]] * 40 + 60).round(2)
        target = ((frame[columns[0]] > 90) ^ (rng.random(400) < 0.05)).astype(int)
        model = LogisticRegression(C=1.0 / (n + 1), max_iter=500).fit(frame, target)
        with mlflow.start_run(run_name=f"{name}-train-{n + 1}") as run:
            mlflow.log_params({"C": 1.0 / (n + 1), "max_iter": 500, "rows": 400})
            mlflow.log_metrics({"accuracy": float(model.score(frame, target)),
                                "positive_rate": float(target.mean())})
            # The training data goes with the run (data/train.csv), so a reference profile can be built from it.
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "train.csv"
                frame.assign(label=target).to_csv(csv, index=False)
                mlflow.log_artifact(str(csv), artifact_path="data")
                dataset = mlflow.data.from_pandas(frame.assign(label=target), source=str(csv),
                                                  name=f"{name}-train", targets="label")
                mlflow.log_input(dataset, context="training")
            mlflow.sklearn.log_model(model, name="model", input_example=frame.head(3),
                                     serialization_format="cloudpickle")
            run_ids.append(run.info.run_id)
    return run_ids


class Command(BaseCommand):
    help = ("Register demo models in MLflow through Modelplane and deploy one to dev (needs MLflow, the worker "
            "and the gateway; standalone runs it in the background).")

    def add_arguments(self, parser):
        parser.add_argument("--no-deploy", action="store_true", help="Register the models only.")
        parser.add_argument("--scan-timeout", type=float, default=300.0)

    def handle(self, *args, **opts):
        from apps.accounts.models import Team, User
        from apps.core.actors import Actor
        from apps.core.errors import ServiceError
        from apps.deployments import services as deployments
        from apps.deployments.models import Deployment, Environment
        from apps.registry import services as registry
        from apps.registry.models import ModelVersion, RegisteredModel

        def as_user(username: str) -> Actor:
            user = User.objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"seed_demo_models: run seed_demo first (no user {username!r}).")
            return Actor.for_user(user)

        try:
            for model_name, team_slug, scientist, columns, seed in (
                (FRAUD_MODEL, "fraud", "scientist", ["amount", "velocity", "account_age"], 7),
                (RECS_MODEL, "recs", "recs-scientist", ["affinity", "recency", "popularity"], 11),
            ):
                if RegisteredModel.objects.filter(name=model_name).exists():
                    continue
                team = Team.objects.get(slug=team_slug)
                actor = as_user(scientist)
                for run_id in _train_and_log(model_name, f"{model_name}-training", seed, columns, versions=2):
                    version = registry.modelversion_register_from_run(
                        actor=actor, model_name=model_name, run_id=run_id, team_id=team.pk,
                        description="Demo model trained on synthetic data by seed_demo_models.",
                        risk_tier="medium")
                    self.stdout.write(f"seed_demo_models: registered {version} (scan queued)")

            if opts["no_deploy"] or Deployment.objects.filter(name=DEMO_DEPLOYMENT).exists():
                return
            deadline = time.monotonic() + opts["scan_timeout"]
            version = None
            while time.monotonic() < deadline:
                version = (ModelVersion.objects.filter(model__name=FRAUD_MODEL)
                           .exclude(status=ModelVersion.Status.PENDING_SCAN).order_by("version").first())
                if version is not None:
                    break
                time.sleep(2)
            if version is None or not version.deployable:
                raise CommandError(f"seed_demo_models: {FRAUD_MODEL} v1 was not scanned ready in time "
                                   f"({version.status if version else 'still pending'}); is the worker running?")
            dev = Environment.objects.get(name="dev")
            deployment = deployments.deployment_create(
                actor=as_user("engineer"), name=DEMO_DEPLOYMENT, environment_id=dev.pk,
                model_version_id=version.pk, strategy=Deployment.Strategy.BLUE_GREEN, replicas=1,
                description="The demo fraud model, served by a local MLflow scoring server.",
                rollback_window_seconds=1800)
            self.stdout.write(f"seed_demo_models: deployment {deployment.name} created; the worker starts it")
        except ServiceError as exc:
            raise CommandError(f"seed_demo_models: {exc.message} {exc.fields or ''}".strip()) from exc

"""The rollout tests' model repository (models with several versions) serves the fleet's rollout test too."""

from tests.server.rollouts.test_rollouts import rollout_repo  # noqa: F401 (a fixture)

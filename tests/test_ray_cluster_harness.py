"""The test-and-bench Ray cluster harness on a machine that never ran Ray: `ray start` needs a token and does not
make one (only a local `ray.init()` does), so the harness has Ray write `~/.ray/auth_token` first.

Broken build this catches: a harness that starts `ray start --head` under `RAY_AUTH_MODE=token` without making a
token first, which fails on a fresh machine (CI's, or the bench's first run) whenever no earlier `ray.init()` in
the same home happened to write one.
"""
from __future__ import annotations

import os

from engine.testing.ray_cluster import LocalRayCluster, auth_token


def test_a_cluster_starts_in_a_home_without_a_token_and_answers_with_the_one_it_made(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = str(home)
    assert auth_token(env) is None
    cluster = LocalRayCluster(num_cpus=1, env=env)
    cluster.env = {k: v for k, v in cluster.env.items() if not k.startswith("RAY_AUTH_TOKEN")}  # os.environ's too
    with cluster:
        token_file = home / ".ray" / "auth_token"
        assert token_file.is_file() and len(token_file.read_text().strip()) >= 16
        assert auth_token(cluster.env) == token_file.read_text().strip()
        assert cluster.api("/api/version")["ray_version"]  # the dashboard accepts the made token

"""Shared test set-up: keep DDS on localhost and give each test session its own ROS domain so
parallel runs on one machine do not see each other's nodes."""

import os

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(50 + os.getpid() % 100))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slower test (still run in CI)")
    config.addinivalue_line("markers", "ros: starts real rclpy nodes (DDS on localhost)")


@pytest.fixture
def rclpy_context():
    """An initialised rclpy context, shut down after the test."""
    import rclpy
    from rclpy.context import Context

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)

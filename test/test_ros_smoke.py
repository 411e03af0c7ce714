"""Real ROS graph: the reconstruction node runs as its own process (its console script), a test
node publishes a 640x480 rgb8 image, a 16UC1 depth image and CameraInfo over localhost DDS, and
calls the node's GetBufferStatus service. Bad input must be reported, not crash the node."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def _wait(pred, timeout, spin):
    timeout = max(timeout, 60.0)   # a deadline for failures only (see _graph_helpers)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        spin()
        if pred():
            return True
    return False


@pytest.fixture
def recon_process():
    exe = shutil.which("reconstruction_node") or os.path.join(
        os.path.dirname(sys.executable), "reconstruction_node")
    # pairs wait up to 60 s for the first CameraInfo: under load it can come after them
    proc = subprocess.Popen([exe, "--ros-args", "-r", "__ns:=/smoke", "-p", "sync_slop_s:=0.02",
                             "-p", "camera_info_wait_s:=60.0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc
    proc.terminate()
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    print(out)


def test_publish_rgbd_and_call_service(rclpy_context, recon_process):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from nol_ros.camera import SMOT_XTION
    from nol_ros.ros.client import NolClient
    from nol_ros.ros.conversions import depth_to_image, intrinsics_to_camera_info, numpy_to_image

    node = rclpy.create_node("smoke_camera", namespace="/smoke", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)  # like openni2
    pub_rgb = node.create_publisher(Image, "camera/rgb/image_raw", qos)
    pub_depth = node.create_publisher(Image, "camera/depth_registered/image_raw", qos)
    pub_info = node.create_publisher(CameraInfo, "camera/rgb/camera_info", qos)
    spin = lambda: executor.spin_once(timeout_sec=0.05)  # noqa: E731
    # the service client: its own node, spun in its own thread
    nol = NolClient(namespace="/smoke", context=rclpy_context, node_name="smoke_client")
    try:
        nol.wait_for_nodes(["reconstruction"], 60)   # ServiceTimeoutError if it did not come up
        assert _wait(lambda: all(p.get_subscription_count() > 0
                                 for p in (pub_rgb, pub_depth, pub_info)), 10, spin)

        rng = np.random.default_rng(0)
        rgb = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        depth = np.full((480, 640), 1.2, np.float32)
        depth[:, :160] = 0.0  # a quarter invalid
        now = node.get_clock().now()

        def publish(i, rgb_img, depth_img):
            t = (now + rclpy.duration.Duration(seconds=i / 30)).to_msg()
            info = intrinsics_to_camera_info(SMOT_XTION, stamp=t)
            rgb_img.header.stamp = t
            # depth stamped 4 ms later, like the Xtion
            dt = (now + rclpy.duration.Duration(seconds=i / 30 + 0.004)).to_msg()
            depth_img.header.stamp = dt
            pub_info.publish(info)
            spin()
            pub_rgb.publish(rgb_img)
            pub_depth.publish(depth_img)

        def status():
            return nol.buffer_status(timeout_s=60.0)

        for i in range(3):
            publish(i, numpy_to_image(rgb, "rgb8"), depth_to_image(depth, "16UC1"))
            assert _wait(lambda i=i: status().frames_received >= i + 1, 10, spin)
        st = status()
        assert (st.width, st.height) == (640, 480)
        assert (st.rgb_encoding, st.depth_encoding) == ("rgb8", "16UC1")
        assert st.last_valid_depth_fraction == pytest.approx(0.75, abs=1e-6)
        assert st.last_median_depth_m == pytest.approx(1.2, abs=1e-3)
        assert st.frames_dropped == 0 and st.error_code == ""

        # bad input: depth not registered (different size) -> counted, reported, node lives on
        small = depth_to_image(np.full((240, 320), 1.0, np.float32), "16UC1")
        publish(3, numpy_to_image(rgb, "rgb8"), small)
        assert _wait(lambda: status().frames_dropped >= 1, 10, spin)
        st = status()
        assert st.error_code == "BAD_INPUT" and "registered" in st.message
        publish(4, numpy_to_image(rgb, "rgb8"), depth_to_image(depth, "32FC1"))
        assert _wait(lambda: status().frames_received >= 4, 10, spin)
        assert status().depth_encoding == "32FC1"
        assert recon_process.poll() is None, "node died"
    finally:
        nol.destroy()
        node.destroy_node()

"""recognizer node: the trained detector + pose estimator on the live camera stream ->
~/detections, object poses on /tf, ~/status. The work is nol_ros.services.recognition (models
loaded and watched, one worker on the freshest frame); this node maps messages onto it and its
results back. Bad frames are counted and reported, never fatal. Topics, services and
parameters: docs/ros_api.md.
"""

from __future__ import annotations

import sys
import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from nol_ros.msg import DetectionArray, RecognizerStatus
from nol_ros.ros.conversions import detection_msgs, ns_to_stamp, recognizer_status_msg
from nol_ros.ros.params import declare_and_read, watch_dynamic
from nol_ros.ros.qos import latched_qos, sensor_qos
from nol_ros.ros.runtime import (
    ErrorReporter,
    ShutsDown,
    device_for,
    log_to,
    offer_service,
    publish_quietly,
    run_nodes,
    tf_endpoints,
    wall_timer,
)
from nol_ros.services.recognition import (
    Frame,
    NoCameraInfoError,
    RecognitionConfig,
    RecognitionService,
    frame_from_messages,
)
from nol_ros.streaming.messages import stamp_to_ns
from nol_ros.streaming.sync import ApproximateTimeSync

DYNAMIC = ("models_dir", "score_thresh", "max_per_class", "appearance", "min_pose_score",
           "models_poll_s", "publish_tf")
RANGES = {"max_per_class": (0, 1000), "min_pose_score": (0.0, 1.0), "models_poll_s": (0.0, 3600.0),
          "camera_info_wait_s": (0.0, 3600.0), "sync_slop_s": (0.0, 1.0),
          "torch_threads": (0, 256), "qos_depth": (1, 1000),
          "pose_workers": (0, 64)}


class RecognizerNode(ShutsDown, Node):
    def __init__(self, node_name: str = "recognizer", **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self.cfg: RecognitionConfig = declare_and_read(self, RecognitionConfig, "recognizer",
                                                       DYNAMIC, RANGES)
        cfg, log = self.cfg, self.get_logger()
        self.errors = ErrorReporter(log)
        device = device_for(self, cfg.device)
        self._info = None
        _, self.tf_pub, problem = tf_endpoints(self, listen=False, broadcast=True)
        if problem:  # detections still go out
            log.error(f"{problem}; object poses are published in ~/detections only")
        self.det_pub = self.create_publisher(DetectionArray, "~/detections", 10)
        self.status_pub = self.create_publisher(RecognizerStatus, "~/status", latched_qos())
        self.service = RecognitionService(cfg, device, self._on_result, self._on_error,
                                          log_to(log))
        sensors = MutuallyExclusiveCallbackGroup()
        qos = sensor_qos(cfg.qos_reliability, cfg.qos_depth)
        self.sync = None
        if cfg.use_depth:
            self.sync = ApproximateTimeSync(2, cfg.sync_slop_s, self._on_frame)
            for i, topic in enumerate((cfg.rgb_topic, cfg.depth_topic)):
                self.create_subscription(
                    Image, topic, lambda m, i=i: self.sync.add(i, stamp_to_ns(m.header.stamp), m),
                    qos, callback_group=sensors)
        else:
            self.create_subscription(Image, cfg.rgb_topic, lambda m: self._on_frame([m]), qos,
                                     callback_group=sensors)
        self.create_subscription(CameraInfo, cfg.camera_info_topic, self._on_info, qos,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        control = MutuallyExclusiveCallbackGroup()
        offer_service(self, Trigger, "~/reload", self._on_reload, control)
        wall_timer(self, 1.0, self._on_timer, control)  # status and models poll
        watch_dynamic(self, lambda: self.cfg, self._reconfigure)
        self._publish_status()
        log.info(f"recognising on {cfg.rgb_topic}" + (f" + {cfg.depth_topic} (slop "
                 f"{cfg.sync_slop_s} s)" if cfg.use_depth else "") + f", device {device}")

    # -- parameters, models ------------------------------------------------------------------
    def _reconfigure(self, cfg: RecognitionConfig, changed: set[str]) -> None:
        self.cfg = cfg
        self.service.reconfigure(cfg)

    def _on_reload(self, req, resp):
        resp.success, resp.message = self.service.load(self.cfg.models_dir, "reload")
        self._publish_status()
        return resp

    def _on_timer(self):
        self.service.poll()
        self._publish_status()

    # -- input -------------------------------------------------------------------------------
    def _on_info(self, msg):
        self._info = msg

    def _on_frame(self, msgs):
        self.service.put(lambda t=time.monotonic(): self._decode(msgs, t))

    def _decode(self, msgs, t_arrival: float) -> Frame:
        """On the worker: the messages as a Frame, or the InputError that rejects them."""
        deadline = time.monotonic() + self.cfg.camera_info_wait_s
        while self._info is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._info is None:
            raise NoCameraInfoError(
                f"no CameraInfo on {self.cfg.camera_info_topic} (waited "
                f"{self.cfg.camera_info_wait_s} s); check that it is published and remapped")
        return frame_from_messages(msgs, self._info, t_arrival)

    # -- output ------------------------------------------------------------------------------
    def _on_result(self, frame: Frame, results, frames) -> None:
        if not self.context.ok():
            return
        out = DetectionArray()
        out.header.stamp, out.header.frame_id = ns_to_stamp(frame.stamp_ns), frame.frame_id
        out.detections = detection_msgs(results)
        self.det_pub.publish(out)
        if frames and self.tf_pub is not None and self.cfg.publish_tf:
            cam = self.cfg.camera_frame or frame.frame_id
            self.tf_pub.send_many([(cam, child, frame.stamp_ns, T) for child, T in frames])
        self._publish_status()

    def _on_error(self, code: str, message: str) -> None:
        self.errors.report(code, message, "frame not recognised")
        self._publish_status()

    def status_msg(self) -> RecognizerStatus:
        return recognizer_status_msg(self.service.state(), self.sync.dropped if self.sync else 0,
                                     self.get_clock().now().to_msg())

    def _publish_status(self):
        publish_quietly(self.status_pub, self.status_msg)


def main(argv: list[str] | None = None) -> int:
    return run_nodes([RecognizerNode], argv if argv is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

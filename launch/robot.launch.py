"""The learning nodes and the recogniser on a live ASUS Xtion (openni2_camera topics), for a
real ROS 2 install:

    ros2 launch openni2_camera camera_with_cloud.launch.py      # or your camera driver
    ros2 launch nol_ros robot.launch.py namespace:=robot camera:=camera

`camera` is the driver's topic prefix, relative to `namespace` (camera/rgb/image_raw,
camera/depth_registered/image_raw, camera/rgb/camera_info); odometry comes from /tf
(odom -> base_link -> camera_rgb_optical_frame) when the robot publishes it. Wall-clock time
(use_sim_time:=false). The recognizer runs the models the trainer wrote
(config/recognizer.yaml models_dir; picked up when they appear) on the same camera stream and
publishes ~/detections and camera -> object_NAME on /tf. The same graph as
config/bringup/robot.yaml (`nol-ros bringup --config robot`); parameters come from the
package's config/*.yaml, the files bring-up passes too.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    config = os.path.join(get_package_share_directory("nol_ros"), "config")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="live camera: wall-clock time"),
        DeclareLaunchArgument("camera", default_value="camera",
                              description="camera driver topic prefix (relative)"),
        Node(package="nol_ros", executable="reconstruction_node", name="reconstruction",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "reconstruction.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             remappings=[
                 ("camera/rgb/image_raw", [LaunchConfiguration("camera"), "/rgb/image_raw"]),
                 ("camera/depth_registered/image_raw",
                  [LaunchConfiguration("camera"), "/depth_registered/image_raw"]),
                 ("camera/rgb/camera_info", [LaunchConfiguration("camera"), "/rgb/camera_info"]),
             ]),
        Node(package="nol_ros", executable="view_selection_node", name="view_selection",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "view_selection.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="nol_node", name="nol",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "nol.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="trainer_node", name="trainer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "trainer.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}]),
        Node(package="nol_ros", executable="recognizer_node", name="recognizer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "recognizer.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             remappings=[
                 ("camera/rgb/image_raw", [LaunchConfiguration("camera"), "/rgb/image_raw"]),
                 ("camera/depth_registered/image_raw",
                  [LaunchConfiguration("camera"), "/depth_registered/image_raw"]),
                 ("camera/rgb/camera_info", [LaunchConfiguration("camera"), "/rgb/camera_info"]),
             ]),
    ])

"""The robot's half of a robot + workstation deployment (docs/deployment.md): reconstruction,
view_selection (writes each learnt object's package for the workstation), transfer (sends the
packages, fetches the models back) and the recognizer on a live camera, for a real ROS 2
install; the workstation runs workstation.launch.py:

    ros2 launch nol_ros robot_remote.launch.py namespace:=robot camera:=camera

`camera` is the driver's topic prefix, relative to `namespace`. The same graph as
config/bringup/robot_remote.yaml (`nol-ros bringup --config robot_remote`); parameters come
from the package's config/*.yaml, the files bring-up passes too.
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
        Node(package="nol_ros", executable="transfer_node", name="transfer",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "transfer.yaml"),
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

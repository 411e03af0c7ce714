"""The learning nodes and the recogniser fed by a rosbag2 replay on bag time, for a real ROS 2
install:

    ros2 launch nol_ros replay.launch.py bag:=/path/to/bag rate:=1.0

The bag is played by the package's `bag_replay` (= `nol-ros replay BAG --clock`: original
topics, stamps and QoS, /clock) so no rosbag2 plugin is needed; `ros2 bag play BAG --clock`
in another terminal works the same with the learn graph (learn.launch.py use_sim_time:=true).
The nodes run with use_sim_time:=true; the reconstruction and recognizer nodes take the bag's
absolute camera topics whatever the namespace (replay a test bag to see the recogniser's
detections on ~/detections and /tf). The same graph as config/bringup/replay.yaml
(`nol-ros bringup --config replay bag:=...`); parameters come from the package's config/*.yaml,
the files bring-up passes too.
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
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="follow the bag's /clock"),
        DeclareLaunchArgument("bag", description="rosbag2 folder to play"),
        DeclareLaunchArgument("rate", default_value="1.0", description="replay speed factor"),
        Node(package="nol_ros", executable="reconstruction_node", name="reconstruction",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[os.path.join(config, "reconstruction.yaml"),
                         {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             remappings=[
                 ("camera/rgb/image_raw", "/camera/rgb/image_raw"),
                 ("camera/depth_registered/image_raw", "/camera/depth_registered/image_raw"),
                 ("camera/rgb/camera_info", "/camera/rgb/camera_info"),
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
                 ("camera/rgb/image_raw", "/camera/rgb/image_raw"),
                 ("camera/depth_registered/image_raw", "/camera/depth_registered/image_raw"),
                 ("camera/rgb/camera_info", "/camera/rgb/camera_info"),
             ]),
        Node(package="nol_ros", executable="bag_replay", name="bag_replay",
             namespace=LaunchConfiguration("namespace"), output="screen",
             parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
             arguments=[LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
                        "--clock", "--wait-for-subscribers", "120",
                        "--subscribers", "/camera/rgb/image_raw=2",
                        "/camera/depth_registered/image_raw=2", "/camera/rgb/camera_info=2"]),
    ])

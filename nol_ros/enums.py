"""The closed sets of names the package accepts: presets, render methods, pose solvers, tracker
methods, ... one ``StrEnum`` each.

A member IS its string (``PoseSolver.RGBD == "rgbd"``, ``f"{m}"`` and ``json.dumps`` give the
plain name), so YAML files, ROS parameters, request fields, reports and the command line keep
the names they always had. User input becomes a member in one place per enum,
:meth:`NameEnum.parse`, which refuses an unknown name with the allowed ones: the config
dataclasses call it in ``__post_init__``, :func:`nol_ros.config.from_dict` for a field typed
with the enum, the ROS layer lists ``names()`` in each parameter's descriptor and the CLI uses
the enum for ``choices=``.

This module imports nothing heavy: the command line builds its parser from it.
"""

from __future__ import annotations

from enum import StrEnum

from nol_ros.errors import ConfigError, NolError


class NameEnum(StrEnum):
    """Base of the package's name sets."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The allowed names, in declaration order."""
        return tuple(m.value for m in cls)

    @classmethod
    def parse(cls, value, what: str = "", error: type[NolError] = ConfigError):
        """``value`` (a name or a member) as a member of this enum, else ``error`` naming
        ``what`` (default: the enum's description) and the allowed names."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            hint = cls._hint()
            raise error(f"{what or cls._what()} {value!r} unknown; use one of "
                        f"{', '.join(cls.names())}{f' ({hint})' if hint else ''}") from None

    @classmethod
    def _hint(cls) -> str:
        """What the names mean, added to the error message (optional)."""
        return ""

    @classmethod
    def _what(cls) -> str:
        return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".").split(":")[0]


class Preset(NameEnum):
    """recognition preset: pose grid, detection set, detector and pose network sizes
    (nol_ros.recognition.pipeline.PRESETS); also what a learnt object's training set is rendered
    on."""

    TINY = "tiny"       # tests
    DEMO = "demo"       # make demo
    CPU = "cpu"         # the benchmark
    PAPER = "paper"     # the paper's sizes, for a GPU

    @classmethod
    def _hint(cls) -> str:
        return "tiny: tests, demo: make demo, cpu: benchmark, paper: GPU"


class NolPreset(NameEnum):
    """NOL network preset (nol_ros.nol.config.NolConfig.preset)."""

    PAPER = "paper"
    CPU = "cpu"


class WorldPreset(NameEnum):
    """synthetic world preset (nol_ros.datasets.synthetic.generate.PRESETS)."""

    SMALL = "small"     # unit tests
    DEMO = "demo"       # make demo
    FULL = "full"       # benchmarks, with real-sensor effects


class RenderMethod(NameEnum):
    """render method: what an object renderer runs (nol_ros.nol.renderer)."""

    NOL = "nol"
    IBR_ANGLE = "ibr_angle"
    IBR_MEAN = "ibr_mean"
    IBR_BEST = "ibr_best"
    TEXTURE = "texture"
    FIT = "fit"         # the surface colour fitted to all sources (nol_ros.nol.surface_fit)


class RenderStageMethod(NameEnum):
    """render.method: the method a learn request or ``nol-ros learn --method`` names."""

    AUTO = "auto"       # the renderer the model card's measurement chose (nol, fit or IBR)
    NOL = "nol"
    IBR = "ibr"         # = ibr_angle
    IBR_ANGLE = "ibr_angle"
    IBR_MEAN = "ibr_mean"
    IBR_BEST = "ibr_best"
    FIT = "fit"


class RefineMethod(NameEnum):
    """refine method: how source poses are refined (nol_ros.nol.renderer.RefineConfig)."""

    NONE = "none"
    SE3 = "se3"
    EULER = "euler"


class RefineTarget(NameEnum):
    """refine target: the consensus being refined towards."""

    MOVING = "moving"   # the consensus, predicted again every round
    FIXED = "fixed"     # the paper's X_S(t0)


class ColourSource(NameEnum):
    """colour source: the full-resolution source crops or the network's maps."""

    SOURCE = "source"
    NETWORK = "network"


class PoseSolver(NameEnum):
    """recognizer solver: what gives the pose ICP starts from."""

    PNP = "pnp"         # PnP on the colour image
    RGBD = "rgbd"       # rigid 3D-3D fit to the depth, PnP where that finds none


class TrackerMethod(NameEnum):
    """tracker method: the RGB-D odometry of the camera tracker."""

    GEOMETRY_THEN_COLOUR = "geometry_then_colour"
    POINT_TO_PLANE = "point_to_plane"
    HYBRID = "hybrid"
    INTENSITY = "intensity"


class OdometryMode(NameEnum):
    """tracking.odometry_mode: how the live tracker uses the robot's odometry (not "off": YAML
    reads that as false)."""

    AUTO = "auto"           # as a motion prior when it comes
    REQUIRED = "required"   # no frame tracked without it
    NONE = "none"           # vision only


class TrainSource(NameEnum):
    """training source: what the recognisers of a benchmark run train on."""

    GT = "gt"       # renders of the ground-truth textured mesh
    REAL = "real"   # the real training images
    NOL = "nol"     # NOL renders of the learnt objects
    IBR = "ibr"     # IBR renders of the learnt objects


class DetectorArch(NameEnum):
    """detector arch: the 2D detector's architecture."""

    RETINANET = "retinanet"
    CENTERNET = "centernet"


class Backbone(NameEnum):
    """backbone: the image encoder of the detector / pose network."""

    RESNET50 = "resnet50"
    CONVNET = "convnet"


class TfMode(NameEnum):
    """tf_mode: the odometry a synthetic bag carries on /tf."""

    GT = "gt"       # the true motion
    ODOM = "odom"   # with planar drift, as a wheel odometry
    NONE = "none"   # no odometry


class BagStorage(NameEnum):
    """storage: the rosbag2 storage plugin."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"


class TumIntrinsics(NameEnum):
    """intrinsics: the camera model of a TUM RGB-D folder."""

    AUTO = "auto"               # calibrated when intrinsics.json has it, else ros_default
    ROS_DEFAULT = "ros_default"  # the OpenNI pinhole (fx=fy=525)
    CALIBRATED = "calibrated"   # the RGB calibration, images undistorted


def parse_field(cfg, name: str, cls: type[NameEnum], what: str = "") -> None:
    """Set field ``name`` of the (frozen) dataclass ``cfg`` to its member of ``cls``: what a
    config's ``__post_init__`` calls, so a config built in code holds members too."""
    object.__setattr__(cfg, name, cls.parse(getattr(cfg, name), what))

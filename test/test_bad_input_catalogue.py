"""The bad-input catalogue (issue 21, item 9; the table is docs/reliability.md "Bad-input
catalogue"): one table, :data:`CASES`, of bad or hostile inputs against the running nodes and
the ``nol-ros`` command line. Every case is a test that checks three things:

1. the error code and the message (the message names the problem and, where there is one, the
   fix);
2. the node (or the CLI) is alive afterwards: a follow-up good call is answered -- for the
   stream cases a good frame is ingested after the bad one; the CLI exits with a one-line
   message and no traceback (exit 2 for bad input, 1 for a failure while running);
3. nothing was lost: the files under every root of this module (data, workspaces, exports, and
   a folder "outside" them all) are exactly as before the case, except what the case itself
   is allowed to write; the live buffer keeps its frames.

A case with ``covered_by`` is tested elsewhere by a test that asserts all three points; this
file checks that the referenced test exists and asserts the case's code and message fragment
(so the table and the tests cannot drift apart). The others are run here: real rclpy nodes over
localhost DDS (one graph for the whole module: nol, reconstruction x2, view_selection, trainer,
recognizer), ``nol-ros`` as a subprocess (all CLI cases at once), and two cases that need a
node of their own as a process: kill -9 in the middle of a LearnObject job, and a full disk
(a file-size limit, RLIMIT_FSIZE, on the node's process: the write fails as on a full disk,
without needing root). The frames are REAL (the TUM fr1/desk piece in test/data). Nothing here
waits on the clock to decide a verdict: every wait polls a condition.
"""

from __future__ import annotations

import ast
import json
import os
import resource
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _graph_helpers import BIN, Graph, params, wait_job

from nol_ros.errors import MAX_MESSAGE_CHARS

ROOT = Path(__file__).resolve().parents[1]
PIECE = Path(__file__).resolve().parent / "data" / "tum_fr1_desk_piece"
T0 = 1_700_000_000_000_000_000      # stamps of the stream cases (ns), 30 Hz from here
DT = 33_333_333
S = 1_000_000_000

CATEGORIES = ("malformed image", "encoding", "zero-size", "invalid depth", "bad CameraInfo",
              "stamps", "missing/stale TF", "bad mesh", "hostile name/path", "absurd options",
              "corrupt checkpoint", "truncated bag", "kill -9 mid-job", "disk full",
              "concurrent calls")


@dataclass(frozen=True)
class Case:
    """One catalogue entry. ``where``: the node service / topic or CLI command it goes to;
    ``code``: the error code in the reply, status or CLI message; ``text``: a fragment of the
    message; ``send``: how this file sends it ((kind, arguments)); ``covered_by``: the test
    that covers it elsewhere (``test/FILE.py::TEST``), instead of ``send``."""

    id: str
    category: str
    where: str
    input: str
    code: str
    text: str
    send: tuple = ()
    covered_by: str = ""
    exit: int = 2            # CLI cases: the exit code


def learn(**kw):
    return ("learn", kw)


def frame(**kw):
    return ("frame", kw)


NOL_SVC = "nol ~/learn_object"
REC_IN = "reconstruction image/CameraInfo topics"
ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
              "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
T_NOL = "test/test_nol_node.py::test_bad_and_hostile_learn_requests_are_refused_before_they_queue"
T_REC = "test/test_reconstruction_node.py::test_bad_input_is_reported_and_the_node_keeps_serving"
T_VS = "test/test_view_selection_node.py::test_bad_select_views_requests_are_refused_with_a_code"
T_RV = "test/test_nodes_learn_to_recognize.py::test_render_views_bad_input_and_idle_release"
T_TR = "test/test_nodes_learn_to_recognize.py::test_trainer_refuses_bad_requests"
T_RZ = ("test/test_nodes_learn_to_recognize.py::"
        "test_recognizer_bad_input_and_bad_models_keep_it_running")
T_TN = "test/test_transfer_node.py::test_bad_requests_are_refused_and_the_node_keeps_serving"
T_RP = "test/test_replay_cli.py::test_bad_arguments_exit_2_with_a_message"
T_LS = "test/test_live_safety.py::test_untrusted_frames_get_no_tf_and_tracking_resumes_after_a_gap"

CASES: list[Case] = [
    # -- images on the reconstruction node's topics -------------------------------------------
    # (first: the buffer is small, so the four exports and the mesh are cheap)
    Case("CONCURRENT-EXPORTS", "concurrent calls", "reconstruction ~/export_sequence",
         "4 ExportSequence calls to one folder at once, with SaveMesh and status", "success",
         "exported 4 times at once", ("concurrent_exports", {})),
    Case("IMG-SHORT-DATA", "malformed image", REC_IN, "rgb8 image with half its bytes",
         "BAD_ENCODING", "expected step*height", frame(rgb="short")),
    Case("IMG-SMALL-STEP", "malformed image", REC_IN, "rgb8 image whose step < width*3",
         "BAD_ENCODING", "the publisher filled the message wrongly", frame(rgb="small_step")),
    Case("IMG-YUV", "encoding", REC_IN, "colour image in yuv422", "BAD_ENCODING", "yuv422",
         covered_by=T_REC),
    Case("IMG-DEPTH-RGB8", "encoding", REC_IN, "depth topic carrying an rgb8 image",
         "BAD_ENCODING", "use 16UC1 (millimetres) or 32FC1", frame(depth="rgb8")),
    Case("IMG-ZERO", "zero-size", REC_IN, "a 0x0 colour image", "BAD_ENCODING",
         "width and height must be > 0", frame(rgb="zero")),
    Case("IMG-DEPTH-SIZE", "zero-size", REC_IN, "depth of another size than the colour image",
         "BAD_INPUT", "registered", covered_by=T_REC),
    Case("DEPTH-ZEROS", "invalid depth", REC_IN, "a depth image of zeros (no reading)",
         "BAD_INPUT", "of the depth pixels are valid", frame(depth="zeros")),
    Case("DEPTH-NAN", "invalid depth", REC_IN, "32FC1 depth of NaN", "BAD_INPUT",
         "16UC1 is mm, 32FC1 is m", frame(depth="nan")),
    Case("DEPTH-MM-AS-M", "invalid depth", REC_IN, "32FC1 depth written in millimetres",
         "BAD_INPUT", "check the depth topic/encoding", frame(depth="mm_as_m")),
    Case("DEPTH-GARBAGE", "invalid depth", "reconstruction tracking",
         "three frames of a flat wall and colour noise", "TRACKING_FAILED", "no TF published",
         covered_by=T_LS),
    # -- CameraInfo -----------------------------------------------------------------------------
    Case("CAMINFO-NONE", "bad CameraInfo", REC_IN, "images and no CameraInfo ever", "BAD_INPUT",
         "CameraInfo", covered_by=T_REC),
    Case("CAMINFO-ZERO-K", "bad CameraInfo", REC_IN, "CameraInfo with K all zero",
         "BAD_CAMERA_INFO", "positive focal length", frame(info="zero_k")),
    Case("CAMINFO-NAN-K", "bad CameraInfo", REC_IN, "CameraInfo with fx = NaN",
         "BAD_CAMERA_INFO", "fx=nan", frame(info="nan_k")),
    Case("CAMINFO-SIZE", "bad CameraInfo", REC_IN, "CameraInfo of 640x480 for 320x240 images",
         "BAD_CAMERA_INFO", "use the camera_info topic that belongs to this image stream",
         frame(info="wrong_size")),
    # -- stamps -----------------------------------------------------------------------------------
    Case("STAMP-PAST", "stamps", REC_IN, "one frame stamped an hour back, then the old timeline",
         "BAD_STAMP", "the buffer keeps its sequence", frame(stamp=-3600 * S)),
    Case("STAMP-FUTURE", "stamps", REC_IN, "one frame stamped a day ahead, then the old timeline",
         "BAD_STAMP", "a single frame off the timeline", frame(stamp=86400 * S)),
    Case("STAMP-ZERO", "stamps", REC_IN, "one frame stamped 0 (an unset header)", "BAD_STAMP",
         "a glitched stamp", frame(stamp="zero")),
    # -- TF ---------------------------------------------------------------------------------------
    Case("TF-MISSING", "missing/stale TF", "reconstruction (odometry required)",
         "frames and no odom TF", "TF_LOOKUP", "required", covered_by=T_REC),
    Case("TF-STALE", "missing/stale TF", "reconstruction (odometry required)",
         "the odom TF stops 5 s before the frame", "TF_EXTRAPOLATION",
         "odometry TF is missing", ("tf", {"kind": "stale"})),
    Case("TF-NO-FRAME-ID", "missing/stale TF", "reconstruction (odometry required)",
         "images with an empty header.frame_id", "TF_LOOKUP", "set the camera_frame parameter",
         ("tf", {"kind": "no_frame_id"})),
    # -- meshes (LearnObject checks them before the job is queued) ----------------------------
    Case("MESH-JUNK", "bad mesh", NOL_SVC, "a PLY file that is only a header line", "BAD_MESH",
         "junk.ply", covered_by=T_NOL),
    Case("MESH-EMPTY-FILE", "zero-size", NOL_SVC, "a mesh file of 0 bytes", "BAD_MESH",
         "give a valid PLY or OBJ file", learn(mesh_path="empty.ply")),
    Case("MESH-NAN", "bad mesh", NOL_SVC, "a mesh with a NaN vertex", "BAD_MESH", "NaN",
         learn(mesh_path="nan.ply")),
    Case("MESH-NO-FACES", "bad mesh", NOL_SVC, "a point cloud PLY (no triangles)", "EMPTY_MESH",
         "no triangles", learn(mesh_path="points.ply")),
    Case("MESH-CM", "bad mesh", NOL_SVC, "a 6 cm cube written in centimetres", "MESH_UNITS",
         "in cm it is 0.06 m across: scale by 0.01", learn(mesh_path="box_cm.ply")),
    Case("MESH-MM", "bad mesh", NOL_SVC, "a 6 cm cube written in millimetres", "MESH_UNITS",
         "in mm it is 0.06 m across: scale by 0.001", learn(mesh_path="box_mm.ply")),
    Case("VS-MESH-BROKEN", "bad mesh", "view_selection ~/select_views", "an unreadable mesh",
         "BAD_MESH", "broken.ply", covered_by=T_VS),
    # -- hostile names and paths ----------------------------------------------------------------
    Case("NAME-DOTDOT", "hostile name/path", NOL_SVC, "object_name '..'", "BAD_PATH",
         "object name", covered_by=T_NOL),
    Case("NAME-EMPTY", "hostile name/path", NOL_SVC, "object_name ''", "BAD_PATH",
         "object name", covered_by=T_NOL),
    Case("NAME-ABSOLUTE", "hostile name/path", NOL_SVC, "object_name '/etc/passwd'", "BAD_PATH",
         "object name", covered_by=T_NOL),
    Case("NAME-RESERVED", "hostile name/path", NOL_SVC, "object_name '_models'", "BAD_PATH",
         "object name", covered_by=T_NOL),
    Case("NAME-SPACE", "hostile name/path", NOL_SVC, "object_name 'my mug' (a space)",
         "BAD_PATH", "use 1-64 letters, digits", learn(object_name="my mug")),
    Case("NAME-UNICODE", "hostile name/path", NOL_SVC, "object_name 'tasse_\u00e9t\u00e9'",
         "BAD_PATH", "is not allowed", learn(object_name="tasse_\u00e9t\u00e9")),
    Case("NAME-HUGE", "hostile name/path", NOL_SVC, "object_name of 100 kB (echoed in the "
         "error: the reply is cut to 2000 characters)", "BAD_PATH", "characters cut]",
         learn(object_name="x" * 100_000)),
    Case("PATH-OUTSIDE", "hostile name/path", NOL_SVC, "mesh_path outside data_root, "
         "absolute, '../', through a symlink, or missing: one message", "BAD_PATH",
         "is not an existing path under", covered_by=T_NOL),
    Case("PATH-SOURCE-OUTSIDE", "hostile name/path", NOL_SVC, "source_path '../outside'",
         "BAD_PATH", "source_path", covered_by=T_NOL),
    Case("PATH-CHECKPOINT-OUTSIDE", "hostile name/path", NOL_SVC,
         "options_yaml render.checkpoint: a file outside data_root", "BAD_PATH",
         "render.checkpoint", learn(options_yaml="render.checkpoint: OUTSIDE/secret.ply")),
    Case("PATH-SYMLINK-DIR", "hostile name/path", NOL_SVC,
         "source_path: a symlinked folder leading out of data_root", "BAD_PATH",
         "is not an existing path under", learn(source=2, source_path="link_out")),
    Case("SAVE-MESH-OUTSIDE", "hostile name/path", "reconstruction ~/save_mesh",
         "path '/etc/passwd.ply', '../escape.ply', or absolute outside export_root", "BAD_PATH",
         "is not under", covered_by=T_REC),
    Case("EXPORT-OUTSIDE", "hostile name/path", "reconstruction ~/export_sequence",
         "output_dir '../../escaped'", "BAD_PATH", "is not under", covered_by=T_REC),
    Case("EXPORT-SYMLINK", "hostile name/path", "reconstruction ~/export_sequence",
         "output_dir: a symlink inside export_root leading out", "BAD_PATH", "is not under",
         ("export", {"output_dir": "link_out/stolen"})),
    Case("EXPORT-FOREIGN", "hostile name/path", "reconstruction ~/export_sequence",
         "output_dir: a folder of someone else's files", "BAD_INPUT", "not a previous export",
         covered_by=T_REC),
    Case("EXPORT-TMP-IN-THE-WAY", "hostile name/path", "reconstruction ~/export_sequence",
         "output_dir whose '.NAME.tmp' sibling is someone else's folder", "BAD_INPUT",
         "was not made by an export", ("export", {"output_dir": "mine"})),
    Case("EXPORT-ON-A-FILE", "hostile name/path", "reconstruction ~/export_sequence",
         "output_dir naming an existing file", "BAD_INPUT", "is a file; give a folder",
         ("export", {"output_dir": "notes.txt"})),
    Case("SAVE-MESH-EXT", "hostile name/path", "reconstruction ~/save_mesh",
         "path 'scene.txt'", "BAD_INPUT", "must end in .ply or .obj",
         ("save_mesh", {"path": "scene.txt"})),
    Case("SAVE-MESH-EMPTY", "zero-size", "reconstruction ~/save_mesh", "path ''", "BAD_INPUT",
         "SaveMesh.path is empty", ("save_mesh", {"path": ""})),
    Case("EXPORT-EMPTY-BUFFER", "zero-size", "reconstruction ~/export_sequence",
         "an export before any frame arrived", "NO_FRAMES", "no frames", covered_by=T_REC),
    Case("VS-MESH-ETC", "hostile name/path", "view_selection ~/select_views",
         "mesh_paths ['/etc/hostname']", "BAD_PATH", "is not an existing path under",
         covered_by=T_VS),
    Case("VS-WORKSPACE-ESCAPE", "hostile name/path", "view_selection ~/select_views",
         "workspace '../../elsewhere'", "BAD_PATH", "workspace", covered_by=T_VS),
    Case("VS-SEQUENCE-SYMLINK", "hostile name/path", "view_selection ~/select_views",
         "sequence_path: a symlink leading out of data_root", "BAD_PATH",
         "is not an existing path under", ("select", {"sequence_path": "link_out"})),
    Case("VS-NOT-BOP", "hostile name/path", "view_selection ~/select_views",
         "sequence_path: a folder that is no BOP scene", "BAD_FILE", "not a BOP scene",
         covered_by=T_VS),
    Case("TRAIN-NAME-ESCAPE", "hostile name/path", "trainer ~/train_detector",
         "object_names ['../mug']", "BAD_PATH", "is not allowed",
         ("train", {"object_names": ["../mug"]})),
    Case("FETCH-OUTSIDE", "hostile name/path", "transfer ~/fetch", "local_path '../outside'",
         "BAD_PATH", "is not under", covered_by=T_TN),
    Case("FETCH-REMOTE-ESCAPE", "hostile name/path", "transfer ~/fetch (the peer)",
         "remote_path '../../etc'", "BAD_PATH", "it must name a place inside the transfer root",
         covered_by=T_TN),
    Case("FETCH-SYMLINK", "hostile name/path", "transfer ~/fetch (the peer)",
         "remote_path: a symlink out of the peer's root", "BAD_PATH",
         "outside the transfer root", covered_by=T_TN),
    Case("RV-NO-POSES", "zero-size", "nol ~/render_views", "no poses", "BAD_POSE", "no poses",
         covered_by=T_RV),
    Case("RV-NAN-POSE", "absurd options", "nol ~/render_views", "a pose with NaN", "BAD_POSE",
         "NaN", covered_by=T_RV),
    Case("RV-ZERO-QUAT", "absurd options", "nol ~/render_views", "a zero quaternion",
         "BAD_POSE", "pose 1", covered_by=T_RV),
    Case("RV-BEHIND", "absurd options", "nol ~/render_views", "an object behind the camera",
         "BAD_POSE", "behind the camera", covered_by=T_RV),
    Case("RV-TOO-MANY", "absurd options", "nol ~/render_views", "65 poses in one request",
         "BAD_POSE", "max_poses", covered_by=T_RV),
    Case("RV-FX-ZERO", "bad CameraInfo", "nol ~/render_views", "camera_info with fx = 0",
         "BAD_CAMERA_INFO", "fx=0", covered_by=T_RV),
    Case("RV-WIDTH-ZERO", "zero-size", "nol ~/render_views", "camera_info 0 pixels wide",
         "BAD_CAMERA_INFO", "size", covered_by=T_RV),
    Case("RV-HUGE", "absurd options", "nol ~/render_views", "a 4000x3000 camera",
         "BAD_CAMERA_INFO", "max_pixels", covered_by=T_RV),
    Case("RV-K-NAN", "bad CameraInfo", "nol ~/render_views", "camera_info with K all NaN",
         "BAD_CAMERA_INFO", "positive focal length", ("render_views", {"k": "nan"})),
    Case("RV-REQUEST-PIXELS", "absurd options", "nol ~/render_views",
         "64 views of 640x480 (over max_request_pixels)", "BAD_POSE", "max_request_pixels",
         ("render_views", {"poses": 64, "size": (640, 480)})),
    # -- options --------------------------------------------------------------------------------
    Case("OPT-ALIAS-BOMB", "absurd options", NOL_SVC, "options_yaml: a YAML alias bomb",
         "BAD_CONFIG", "alias", covered_by=T_NOL),
    Case("OPT-OVERSIZED", "absurd options", NOL_SVC, "options_yaml of 20 kB", "BAD_CONFIG",
         "bytes", covered_by=T_NOL),
    Case("OPT-DEEP", "absurd options", NOL_SVC, "options_yaml nested 10 deep", "BAD_CONFIG",
         "deeper", covered_by=T_NOL),
    Case("OPT-NAN", "absurd options", NOL_SVC, "options_yaml: a fraction = .nan", "BAD_CONFIG",
         "finite", covered_by=T_NOL),
    Case("OPT-UNKNOWN-KEY", "absurd options", NOL_SVC, "options_yaml: an unknown key",
         "BAD_CONFIG", "no_such_option", covered_by=T_NOL),
    Case("OPT-ROOT", "absurd options", NOL_SVC, "options_yaml: workspace_root: /", "BAD_CONFIG",
         "workspace_root", covered_by=T_NOL),
    Case("OPT-SOURCE", "absurd options", NOL_SVC, "source 7", "BAD_INPUT", "unknown source 7",
         covered_by=T_NOL),
    Case("OPT-CROP-HUGE", "absurd options", NOL_SVC,
         "options_yaml self_annotation.crop_size: 100000", "BAD_CONFIG", "[16, 2048] px",
         learn(options_yaml="self_annotation.crop_size: 100000")),
    Case("OPT-STEP-ZERO", "absurd options", NOL_SVC, "options_yaml annotate_step: 0",
         "BAD_CONFIG", "annotate_step 0 must be >= 1",
         learn(options_yaml="self_annotation.annotate_step: 0")),
    Case("OPT-RENDER-BATCH", "absurd options", NOL_SVC, "options_yaml render.batch: 100000000",
         "BAD_CONFIG", "must be in [1, 1024]", learn(options_yaml="render.batch: 100000000")),
    Case("OPT-NOT-MAPPING", "absurd options", NOL_SVC, "options_yaml '[1, 2]'", "BAD_CONFIG",
         "mapping", learn(options_yaml="[1, 2]")),
    Case("OPT-BAD-YAML", "absurd options", NOL_SVC, "options_yaml 'a: [1'", "BAD_CONFIG",
         "not valid YAML", learn(options_yaml="a: [1")),
    Case("TRAIN-IMAGE-HUGE", "absurd options", "trainer ~/train_detector",
         "options_yaml detector.max_size: 100000", "BAD_CONFIG", "<= 4096 px",
         ("train", {"options_yaml": "detector.max_size: 100000"})),
    Case("TRAIN-EPOCHS", "absurd options", "trainer ~/train_detector",
         "options_yaml detector.epochs: 1000000000", "BAD_CONFIG", "epochs 1000000000 <= 10000",
         ("train", {"options_yaml": "detector.epochs: 1000000000"})),
    Case("TRAIN-LR-NAN", "absurd options", "trainer ~/train_pose_estimator",
         "options_yaml pose.lr: .nan", "BAD_CONFIG", "must be finite",
         ("train", {"options_yaml": "pose.lr: .nan", "stage": "pose"})),
    Case("TRAIN-LR-TEXT", "absurd options", "trainer ~/train_pose_estimator",
         "options_yaml pose.lr: 1e9 (YAML text)", "BAD_CONFIG", "write the mantissa with a dot",
         ("train", {"options_yaml": "pose.lr: 1e9", "stage": "pose"})),
    Case("TRAIN-STEPS", "absurd options", "trainer ~/train_pose_estimator",
         "options_yaml pose.steps: 10**12", "BAD_CONFIG", "<= 10000000",
         ("train", {"options_yaml": "pose.steps: 1000000000000", "stage": "pose"})),
    Case("TRAIN-IMAGES", "absurd options", "trainer ~/train_detector",
         "options_yaml detset.n_images: 10**9", "BAD_CONFIG", "must be in [1, 1000000]",
         ("train", {"options_yaml": "detset.n_images: 1000000000"})),
    Case("TRAIN-ALIAS", "absurd options", "trainer ~/train_detector",
         "options_yaml: a YAML alias bomb", "BAD_CONFIG", "alias",
         ("train", {"options_yaml": ALIAS_BOMB})),
    Case("TRAIN-SEED", "absurd options", "trainer ~/train_detector", "options_yaml seed: -1",
         "BAD_CONFIG", "seed must be in [0, 2**32)", ("train", {"options_yaml": "seed: -1"})),
    Case("TRAIN-PRESET", "absurd options", "trainer ~/train_detector", "preset 'huge'",
         "BAD_CONFIG", "huge", covered_by=T_TR),
    Case("TRAIN-UNKNOWN-KEY", "absurd options", "trainer ~/train_pose_estimator",
         "options_yaml pose.stepz: 3", "BAD_CONFIG", "stepz", covered_by=T_TR),
    Case("TRAIN-NOT-A-NUMBER", "absurd options", "trainer ~/train_detector",
         "options_yaml detector.epochs: many", "BAD_CONFIG", "epochs", covered_by=T_TR),
    Case("TRAIN-REPEATS", "absurd options", "trainer ~/train_detector",
         "object_names [mustard_bottle, mustard_bottle]", "BAD_INPUT", "repeats",
         covered_by=T_TR),
    Case("RECOGNIZER-RGBA", "encoding", "recognizer image topics", "an rgba8 colour image",
         "BAD_ENCODING", "rgba8", covered_by=T_RZ),
    Case("RECOGNIZER-CAMINFO", "bad CameraInfo", "recognizer image topics",
         "a 320x240 CameraInfo for 640x480 images", "BAD_CAMERA_INFO", "CameraInfo says",
         covered_by=T_RZ),
    Case("RECOGNIZER-DEPTH-SIZE", "zero-size", "recognizer image topics",
         "depth at half the colour image's size", "SIZE_MISMATCH", "registered",
         covered_by=T_RZ),
    # -- checkpoints ----------------------------------------------------------------------------
    Case("CKPT-NOL-CORRUPT", "corrupt checkpoint", NOL_SVC,
         "options_yaml render.checkpoint: a file of random bytes", "BAD_WEIGHTS",
         "is not a NOL checkpoint", learn(options_yaml="render.method: nol\n"
                                          "render.checkpoint: junk.pt")),
    Case("CKPT-MODELS-JSON", "corrupt checkpoint", "recognizer ~/reload",
         "models_dir whose recognition.json is damaged", "BAD_FILE",
         "train the models again", ("reload", {"models": "models_bad_json"})),
    Case("CKPT-MODELS-MISSING", "corrupt checkpoint", "recognizer ~/reload",
         "models_dir that does not exist (the old models stay)", "NO_MODELS", "no_models",
         covered_by=T_RZ),
    # -- bags -----------------------------------------------------------------------------------
    Case("BAG-NO-METADATA", "truncated bag", NOL_SVC, "source_path: a folder without "
         "metadata.yaml", "BAD_FILE", "metadata.yaml", covered_by=T_NOL),
    Case("BAG-TRUNCATED", "truncated bag", NOL_SVC, "source_path: an MCAP bag cut in half",
         "BAD_FILE", "mcap recover", learn(source=1, source_path="trunc_bag")),
    Case("BAG-REPLAY-MISSING", "truncated bag", "nol-ros replay", "a bag path that does not "
         "exist", "exit 2", "does not exist", covered_by=T_RP),
    Case("BAG-REPLAY-NO-METADATA", "truncated bag", "nol-ros replay", "a folder without "
         "metadata.yaml", "exit 2", "metadata.yaml", covered_by=T_RP),
    # -- kill -9, disk full, concurrency ----------------------------------------------------------
    Case("TIME-BUDGET", "absurd options", NOL_SVC, "a re-learn that runs past the node's "
         "max_job_s (1 s here)", "TIME_BUDGET", "max_job_s = 1 s", ("budget", {})),
    Case("KILL9-LEARN", "kill -9 mid-job", "nol node process",
         "SIGKILL while LearnObject re-learns an object; the node restarted", "UNKNOWN_JOB",
         "no job", ("kill9", {})),
    Case("DISK-FULL-EXPORT", "disk full", "reconstruction ~/export_sequence",
         "re-export over a previous export with the disk full", "DISK_WRITE_FAILED",
         "check the disk space", ("disk_full", {"what": "export"})),
    Case("DISK-FULL-MESH", "disk full", "reconstruction ~/save_mesh",
         "SaveMesh over a previous mesh with the disk full", "DISK_WRITE_FAILED",
         "check the disk space", ("disk_full", {"what": "mesh"})),
    Case("QUEUE-FULL", "concurrent calls", NOL_SVC,
         "a LearnObject while one job runs and max_queued wait", "QUEUE_FULL", "max_queued=1",
         ("queue_full", {})),
    Case("CONCURRENT-REFUSALS", "concurrent calls", NOL_SVC,
         "40 hostile LearnObject calls at once", "BAD_PATH", "object name",
         ("concurrent", {"n": 40})),
    # -- the command line -------------------------------------------------------------------------
    Case("CLI-NAME", "hostile name/path", "nol-ros learn", "NAME '..'", "BAD_PATH",
         "object name '..' is not allowed", ("cli", {"args": ["learn", "..", "--mesh", "{box}",
                                                              "--dataset", "{tum}"]})),
    Case("CLI-WORKSPACE-UNWRITABLE", "hostile name/path", "nol-ros learn",
         "--workspace below a file", "BAD_PATH", "cannot create the workspace root",
         ("cli", {"args": ["learn", "mug", "--mesh", "{box}", "--dataset", "{tum}",
                           "--workspace", "{file}/ws"]})),
    Case("CLI-MESH-CM", "bad mesh", "nol-ros learn", "--mesh in centimetres", "MESH_UNITS",
         "scale by 0.01", ("cli", {"args": ["learn", "mug", "--mesh", "{data}/box_cm.ply",
                                            "--dataset", "{tum}"]})),
    Case("CLI-MESH-JUNK", "bad mesh", "nol-ros learn", "--mesh unreadable", "BAD_MESH",
         "cannot read mesh", ("cli", {"args": ["learn", "mug", "--mesh", "{data}/junk.ply",
                                               "--dataset", "{tum}"]})),
    Case("CLI-MESH-WRONG", "bad mesh", "nol-ros learn", "--mesh of an object the sequence does "
         "not show (the bowl for the small world's table)", "MESH_MISMATCH",
         "does not match anything in the scene",
         covered_by="test/test_registration_refusal.py::"
                    "test_learn_with_a_mesh_not_in_the_scene_exits_2"),
    Case("CLI-MESH-EMPTY", "zero-size", "nol-ros learn", "--mesh a file of 0 bytes", "BAD_MESH",
         "give a valid PLY or OBJ file",
         ("cli", {"args": ["learn", "mug", "--mesh", "{data}/empty.ply", "--dataset",
                           "{tum}"]})),
    Case("CLI-BAG-TRUNCATED", "truncated bag", "nol-ros learn", "--bag an MCAP cut in half",
         "BAD_FILE", "mcap recover", ("cli", {"args": ["learn", "mug", "--mesh", "{box}",
                                                       "--bag", "{data}/trunc_bag"]})),
    Case("CLI-REPLAY-TRUNCATED", "truncated bag", "nol-ros replay", "an MCAP cut in half",
         "BAD_FILE", "mcap recover", ("cli", {"args": ["replay", "{data}/trunc_bag"]})),
    Case("CLI-TRAIN-IMAGE-HUGE", "absurd options", "nol-ros train-detector",
         "--options 'detector.max_size: 100000'", "BAD_CONFIG", "<= 4096 px",
         ("cli", {"args": ["train-detector", "--options", "detector.max_size: 100000"]})),
    Case("CLI-TRAIN-ALIAS", "absurd options", "nol-ros train-pose", "--options alias bomb",
         "BAD_CONFIG", "alias", ("cli", {"args": ["train-pose", "--options", ALIAS_BOMB]})),
    Case("CLI-EVAL-MODELS-JSON", "corrupt checkpoint", "nol-ros evaluate",
         "--models whose recognition.json is damaged", "BAD_FILE", "is damaged",
         ("cli", {"args": ["evaluate", "--models", "{data}/models_bad_json", "--scene", "{tum}",
                           "--bop-models", "{data}"]})),
    Case("CLI-EVAL-WEIGHTS", "corrupt checkpoint", "nol-ros evaluate",
         "--models whose detector.pt is random bytes", "BAD_FILE", "cannot read checkpoint",
         ("cli", {"args": ["evaluate", "--models", "{data}/models_bad_pt", "--scene", "{tum}",
                           "--bop-models", "{data}"]})),
    Case("CLI-DISK-FULL", "disk full", "nol-ros learn",
         "re-learn an object with the disk full (32 kB file-size limit)", "DISK_WRITE_FAILED",
         "scene_mesh.ply", ("cli", {"args": ["learn", "mug", "--mesh", "{box}", "--dataset",
                                             "{tum8}", "--no-render"], "fsize": 32768}),
         exit=1),
    Case("CLI-RECORD-EXISTS", "hostile name/path", "nol-ros record",
         "an output folder that exists", "exit 2", "exists", covered_by=T_RP),
]

BY_ID = {c.id: c for c in CASES}
OWN_FOLDERS = ("cli/",)   # the CLI cases' folders (they run beside the node cases)
OWN_TESTS = {"kill9": "test_node_case_kill9_mid_learn_then_restart",
             "budget": "test_node_case_time_budget", "disk_full": "test_node_case_disk_full",
             "cli": "test_cli_case"}


def where_tested(case: Case) -> str:
    """The test of a case, as the docs table names it."""
    if case.covered_by:
        return case.covered_by.removeprefix("test/")
    return f"test_bad_input_catalogue.py::{OWN_TESTS.get(case.send[0], 'test_node_case')}"
NODE_CASES = [c for c in CASES if c.send and c.send[0] != "cli"]
CLI_CASES = [c for c in CASES if c.send and c.send[0] == "cli"]
REF_CASES = [c for c in CASES if c.covered_by]


# -- the table itself -------------------------------------------------------------------------
def test_the_catalogue_has_60_cases_in_every_category_each_tested_once():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 60, len(CASES)
    assert {c.category for c in CASES} == set(CATEGORIES), \
        set(CATEGORIES) ^ {c.category for c in CASES}
    for c in CASES:
        assert bool(c.send) != bool(c.covered_by), f"{c.id}: run here xor covered_by"
        assert c.code and c.text and c.input and c.where, c.id


@pytest.mark.parametrize("case", REF_CASES, ids=lambda c: c.id)
def test_referenced_case_is_asserted_by_its_test(case):
    """The referenced test exists and asserts the case's code and message fragment (literally
    in its source: the table cannot name what the test does not check)."""
    path, _, name = case.covered_by.partition("::")
    src = (ROOT / path).read_text()
    fn = next((n for n in ast.walk(ast.parse(src))
               if isinstance(n, ast.FunctionDef) and n.name == name), None)
    assert fn is not None, f"{case.id}: {case.covered_by} does not exist"
    body = ast.get_source_segment(src, fn)
    code = case.code.removeprefix("exit ")
    assert code in body, f"{case.id}: {case.covered_by} does not check {case.code}"
    assert case.text in body, f"{case.id}: {case.covered_by} does not check '{case.text}'"


# -- shared data --------------------------------------------------------------------------------
def _box_ply(path: Path, scale: float = 1.0, nan: bool = False, faces: bool = True) -> None:
    """A 6 cm cube (ASCII PLY), in metres times ``scale``."""
    v = [[x * scale, y * scale, z * scale] for x in (-.03, .03) for y in (-.03, .03)
         for z in (-.03, .03)]
    if nan:
        v[3][1] = float("nan")
    f = [(0, 1, 3), (0, 3, 2), (4, 6, 7), (4, 7, 5), (0, 4, 5), (0, 5, 1), (2, 3, 7), (2, 7, 6),
         (0, 2, 6), (0, 6, 4), (1, 5, 7), (1, 7, 3)] if faces else []
    head = ["ply", "format ascii 1.0", f"element vertex {len(v)}", "property float x",
            "property float y", "property float z", f"element face {len(f)}",
            "property list uchar int vertex_indices", "end_header"]
    path.write_text("\n".join(head + [" ".join(map(str, p)) for p in v]
                              + [f"3 {a} {b} {c}" for a, b, c in f]) + "\n")


def _fake_learnt(ws: Path, name: str, obj_id: int) -> None:
    """What the nodes read of a learnt object (views.json: RenderViews; object.json and
    render_set.json: the trainer), and object_ids.json."""
    from nol_ros.workspace import Workspace

    lo = Workspace(ws).learnt(name)
    lo.files.dir.mkdir(parents=True)
    lo.files.views_json.write_text('{"crop_size": 256, "views": []}')
    lo.files.object_json.write_text(json.dumps({"name": name, "obj_id": obj_id,
                                                "symmetric": False}))
    lo.renders.mkdir()
    lo.render_set_json.write_text(json.dumps(
        {"source": "ibr_angle", "grid": {"az_step_deg": 60},
         "objects": {str(obj_id): {"obj_id": obj_id, "images": 54}}}))
    (lo.dir / "report.json").write_text('{"objects": {}}')
    Workspace(ws).object_id(name)


def _tum():
    from nol_ros.datasets.tum import read_tum_sequence

    seq = read_tum_sequence(PIECE)
    return seq, [(f.load_rgb(), f.load_depth()) for f in seq.frames]


def _write_bop(seq, frames, out: Path, n: int) -> None:
    from nol_ros.datasets.bop import BopSceneWriter

    with BopSceneWriter(out, seq.intrinsics, depth_scale=1.0) as w:
        for k, (rgb, depth) in enumerate(frames[:n]):
            w.add_frame(k, rgb, depth, None, [], stamp_ns=T0 + k * DT)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Every root of this module under one folder (so 'nothing lost' sees them all):

    data/      inputs: meshes good and bad, a NOL checkpoint of random bytes, a fake BOP folder
               without images, the TUM piece as BOP scenes (37 and 8 frames), a bag cut in
               half, damaged models folders, a symlink leading out
    ws/        the nol and trainer nodes' workspace root, with a learnt object 'mug'
    export/    the reconstruction node's export_root (a symlink out, a foreign '.mine.tmp')
    outside/   what no request may touch
    """
    from nol_ros.datasets.bag import export_bag

    b = tmp_path_factory.mktemp("catalogue")
    d, ws, ex, out = (b / n for n in ("data", "ws", "export", "outside"))
    for p in (d, ws, ex, out):
        p.mkdir()
    _box_ply(out / "secret.ply")
    _box_ply(d / "box.ply")
    _box_ply(d / "box_cm.ply", 100.0)
    _box_ply(d / "box_mm.ply", 1000.0)
    _box_ply(d / "nan.ply", nan=True)
    _box_ply(d / "points.ply", faces=False)
    (d / "junk.ply").write_text("ply\n")
    (d / "empty.ply").write_bytes(b"")
    (d / "junk.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "seq").mkdir()                      # BOP-looking, no images: a job fails at once
    (d / "seq" / "scene_camera.json").write_text("{}")
    (d / "seq" / "scene_gt.json").write_text("{}")
    os.symlink(out, d / "link_out")
    seq, frames = _tum()
    _write_bop(seq, frames, d / "tum", len(frames))
    _write_bop(seq, frames, d / "tum8", 8)
    export_bag(seq, d / "trunc_bag", tf_mode="none", max_frames=4)
    (mcap,) = (d / "trunc_bag").glob("*.mcap")
    with open(mcap, "r+b") as f:
        f.truncate(mcap.stat().st_size // 2)
    for name, det in (("models_bad_json", None), ("models_bad_pt", b"\x00garbage" * 100)):
        m = d / name
        m.mkdir()
        if det is None:
            (m / "recognition.json").write_text('{"classes": [{"obj_id": 1, ')
        else:
            (m / "recognition.json").write_text(json.dumps(
                {"classes": [{"obj_id": 1, "name": "box", "mesh": "box.ply",
                              "diameter_m": 0.1}], "detector": "detector.pt"}))
            (m / "detector.pt").write_bytes(det)
    _fake_learnt(ws, "mug", 1)
    os.symlink(out, ex / "link_out")
    (ex / ".mine.tmp").mkdir()               # someone else's folder where an export stages
    (ex / ".mine.tmp" / "theirs.txt").write_text("not an export's")
    (ex / "notes.txt").write_text("a file, not a folder")
    return b


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """relative path -> (size, mtime_ns, link target) of every file and link under ``root``
    ("dir" for a folder; symlinks not followed), leaving out paths starting with ``skip``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = p.relative_to(root).as_posix()
            if rel.startswith(skip):
                continue
            st = p.lstat()
            if p.is_dir() and not p.is_symlink():   # a folder: that it is there (its mtime
                out[rel] = ("dir",)                  # changes with any temporary file in it)
            else:
                out[rel] = (st.st_size, st.st_mtime_ns, os.readlink(p) if p.is_symlink() else "")
    return out


def assert_nothing_lost(before: dict, after: dict, case: Case) -> None:
    changed = sorted(k for k in before.keys() & after.keys() if before[k] != after[k])
    assert not changed, f"{case.id}: changed {changed}"
    lost, new = sorted(before.keys() - after.keys()), sorted(after.keys() - before.keys())
    assert not lost, f"{case.id}: lost {lost}"
    assert not new, f"{case.id}: new {new}"


# -- the graph (one per module) ------------------------------------------------------------------
class Env:
    """The module's graph: nodes started on first use, the clients, and the stream state."""

    def __init__(self, ctx, base: Path):
        self.ctx, self.base = ctx, base
        self.g = Graph(ctx)
        self.cli = self.g.client_node("catalogue_client")
        self._nodes: dict[str, object] = {}
        self.lock = threading.Lock()

    def client(self, srv_type, name):
        return self.cli.create_client(srv_type, name)

    def call(self, srv_type, name, req, timeout=120.0):
        return self.g.call(self.client(srv_type, name), req, timeout)

    def node(self, kind: str):
        with self.lock:
            if kind not in self._nodes:
                self._nodes[kind] = getattr(self, f"_start_{kind}")()
            return self._nodes[kind]

    # nol: max_queued 1; a canary LearnObject (accepted, fails in its job with BAD_FILE) whose
    # status is the follow-up good call of every case
    def _start_nol(self):
        from nol_ros.nodes.nol_node import NolNode
        from nol_ros.srv import GetJobStatus, LearnObject

        n = self.g.add(NolNode("nol", namespace="/cat", context=self.ctx,
                               parameter_overrides=params(
                                   data_root=str(self.base / "data"), max_queued=1,
                                   learn__workspace_root=str(self.base / "ws"))))
        r = self.call(LearnObject, "/cat/nol/learn_object", LearnObject.Request(
            object_name="canary", mesh_path="box.ply", source=2, source_path="seq"))
        assert r.accepted, r
        st = wait_job(self.g, self.client(GetJobStatus, "/cat/nol/get_job_status"), r.job_id,
                      120)
        assert st.error_code == "BAD_FILE" and "lists no images" in st.message, st
        n.canary = r.job_id
        return n

    def _start_rec(self):
        from nol_ros.nodes.reconstruction_node import ReconstructionNode

        n = self.g.add(ReconstructionNode(
            "reconstruction", namespace="/cat", context=self.ctx, parameter_overrides=params(
                tracking__odometry_mode="none", camera_info_wait_s=0.3, keyframe_images=False,
                tracker__integrate_every=1,   # 4 frames give a scene mesh
                publish_tf=False, export_root=str(self.base / "export"))))
        n.stream = Stream(self, n, "/cat", "cat_cam")
        n.stream.start(tracked=4)
        from nol_ros.srv import ExportSequence

        r = self.call(ExportSequence, "/cat/reconstruction/export_sequence",
                      ExportSequence.Request(output_dir="prev"))   # a previous export to keep
        assert r.success and r.frames == 4, r
        return n

    # odometry required: frames need the odom -> camera TF at their stamp
    def _start_tf(self):
        from nol_ros.nodes.reconstruction_node import ReconstructionNode

        n = self.g.add(ReconstructionNode(
            "reconstruction", namespace="/cat_tf", context=self.ctx, parameter_overrides=params(
                tracking__odometry_mode="required", tracking__tf_timeout_s=0.05,
                tracking__first_tf_timeout_s=0.2, odom_frame="cat_odom",
                camera_info_wait_s=0.3, keyframe_images=False, publish_tf=False,
                export_root=str(self.base / "export"))))
        n.stream = Stream(self, n, "/cat_tf", "cat_tf_cam")
        return n

    def _start_vs(self):
        from nol_ros.nodes.view_selection_node import ViewSelectionNode

        return self.g.add(ViewSelectionNode(
            "view_selection", namespace="/cat", context=self.ctx, parameter_overrides=params(
                workspace_root=str(self.base / "ws" / "view_selection"),
                data_root=str(self.base / "data"))))

    def _start_trainer(self):
        from nol_ros.nodes.trainer_node import TrainerNode

        return self.g.add(TrainerNode("trainer", namespace="/cat", context=self.ctx,
                                      parameter_overrides=params(
                                          train__workspace_root=str(self.base / "ws"),
                                          train__preset="tiny")))

    def _start_recognizer(self):
        from nol_ros.nodes.recognizer_node import RecognizerNode

        return self.g.add(RecognizerNode("recognizer", namespace="/cat_rz", context=self.ctx,
                                         parameter_overrides=params(
                                             models_dir=str(self.base / "data" / "no_models"),
                                             models_poll_s=0.0, camera_info_wait_s=0.3)))

    def close(self):
        self.g.close()


class Stream:
    """A camera publishing the TUM piece to a reconstruction node, paced by the node's counts:
    each pair goes once the node has its CameraInfo, and a case waits until the node has
    counted the pair (received or dropped)."""

    def __init__(self, env: Env, node, ns: str, frame_id: str, info_subscribers: int = 1):
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from tf2_msgs.msg import TFMessage

        from nol_ros.ros.qos import sensor_qos
        from nol_ros.srv import GetBufferStatus

        self.env, self.node, self.ns, self.frame_id = env, node, ns, frame_id
        cam = env.g.client_node(f"camera_{ns.strip('/')}")
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.p_rgb = cam.create_publisher(Image, f"{ns}/camera/rgb/image_raw", qos)
        self.p_depth = cam.create_publisher(Image, f"{ns}/camera/depth_registered/image_raw", qos)
        self.p_info = cam.create_publisher(CameraInfo, f"{ns}/camera/rgb/camera_info",
                                           sensor_qos())
        self.p_tf = cam.create_publisher(TFMessage, "/tf", 100)
        self.status_client = cam.create_client(GetBufferStatus,
                                               f"{ns}/reconstruction/get_buffer_status")
        self.seq, self.frames = _tum()
        self.k, self.t = 0, T0
        env.g.wait(lambda: self.p_rgb.get_subscription_count() > 0
                   and self.p_depth.get_subscription_count() > 0
                   and self.p_info.get_subscription_count() >= info_subscribers, 60,
                   f"{ns} subscriptions")

    def status(self):
        from nol_ros.srv import GetBufferStatus

        return self.env.g.call(self.status_client, GetBufferStatus.Request())

    def info_msg(self, stamp):
        from nol_ros.ros.conversions import intrinsics_to_camera_info

        return intrinsics_to_camera_info(self.seq.intrinsics, stamp, self.frame_id)

    def publish(self, stamp_ns: int, rgb=None, depth=None, info=None, frame_id=None):
        """One pair (and its CameraInfo first): the next TUM frame unless given."""
        from nol_ros.ros.conversions import depth_to_image, ns_to_stamp, numpy_to_image

        r, d = self.frames[self.k % len(self.frames)]
        self.k += 1
        st = ns_to_stamp(stamp_ns)
        fid = self.frame_id if frame_id is None else frame_id
        info = info or self.info_msg(st)
        info.header.stamp = st
        self.p_info.publish(info)
        self.env.g.wait(lambda: self.node.recon.info is not None
                        and self.node.recon.info.header.stamp == st, 60, "the node's CameraInfo")
        m_rgb = rgb or numpy_to_image(r, "rgb8", st, fid)
        m_depth = depth or depth_to_image(d, "16UC1", st, fid)
        m_rgb.header.stamp, m_depth.header.stamp = st, ns_to_stamp(stamp_ns + 4_000_000)
        m_rgb.header.frame_id = m_depth.header.frame_id = fid
        self.p_rgb.publish(m_rgb)
        self.p_depth.publish(m_depth)

    def next_stamp(self) -> int:
        self.t += DT
        return self.t

    def good(self, wait_tracked: bool = False):
        """A good pair; waits until it is ingested (and tracked)."""
        s0 = self.status()
        self.publish(self.next_stamp())
        self.env.g.wait(lambda: self.status().frames_received == s0.frames_received + 1, 60,
                        "the good pair to be ingested")
        if wait_tracked:
            self.env.g.wait(lambda: self.status().tracking.frames_tracked
                            == s0.tracking.frames_tracked + 1, 60, "the good pair tracked")

    def start(self, tracked: int):
        for _ in range(tracked):
            self.good(wait_tracked=True)

    def counted(self, s0, dropped: int = 1, received: int = 0):
        self.env.g.wait(lambda: (self.status().frames_dropped,
                                 self.status().frames_received)
                        == (s0.frames_dropped + dropped, s0.frames_received + received), 60,
                        "the node to count the pair")


@pytest.fixture(scope="module")
def ctx():
    import rclpy
    from rclpy.context import Context

    c = Context()
    rclpy.init(context=c)
    yield c
    if c.ok():
        rclpy.shutdown(context=c)


@pytest.fixture(scope="module")
def env(ctx, base, cli_batch):   # (the CLI cases run while the node cases do)
    e = Env(ctx, base)
    yield e
    e.close()


# -- how each kind of case is sent ---------------------------------------------------------------
def _send_learn(env: Env, kw: dict):
    from nol_ros.srv import LearnObject

    env.node("nol")
    req = {"object_name": "box", "mesh_path": "box.ply", "source": 2, "source_path": "seq", **kw}
    req["options_yaml"] = req.get("options_yaml", "").replace("OUTSIDE", str(env.base / "outside"))
    r = env.call(LearnObject, "/cat/nol/learn_object", LearnObject.Request(**req))
    assert not r.accepted and not r.job_id, r
    return r.error_code, r.message


def _bad_image(kind: str, rgb: np.ndarray, depth: np.ndarray, fid: str):
    from sensor_msgs.msg import Image

    from nol_ros.ros.conversions import depth_to_image, numpy_to_image

    h, w = depth.shape
    if kind == "short":
        m = numpy_to_image(rgb, "rgb8", None, fid)
        m.data = bytes(m.data)[: len(m.data) // 2]
        return m
    if kind == "small_step":
        m = numpy_to_image(rgb, "rgb8", None, fid)
        m.step = w * 3 - 6
        return m
    if kind == "zero":
        return Image(height=0, width=0, encoding="rgb8", step=0, data=b"")
    if kind == "rgb8":
        return numpy_to_image(rgb, "rgb8", None, fid)
    if kind == "zeros":
        return depth_to_image(np.zeros((h, w), np.float32), "16UC1", None, fid)
    if kind == "nan":
        return numpy_to_image(np.full((h, w), np.nan, np.float32), "32FC1", None, fid)
    if kind == "mm_as_m":
        return numpy_to_image((depth * 1000.0).astype(np.float32), "32FC1", None, fid)
    raise ValueError(kind)


def _send_frame(env: Env, kw: dict):
    """A bad pair into the reconstruction node, then (stamps) the old timeline again; the
    status says why it was dropped."""
    node = env.node("rec")
    s = node.stream
    s0 = s.status()
    n_buf, gen = len(node.ingest.snapshot()), node.recon.generation
    r, d = s.frames[s.k % len(s.frames)]
    if "stamp" in kw:
        glitch = 0 if kw["stamp"] == "zero" else s.t + kw["stamp"]
        s.publish(max(glitch, 0) or 1)           # (0 itself is the 'unset' stamp: 1 ns)
        s.publish(s.next_stamp())                # the old timeline again: the glitch is dropped
        s.counted(s0, dropped=1, received=1)
    else:
        info = None
        if "info" in kw:
            info = s.info_msg(None)
            if kw["info"] == "zero_k":
                info.k = [0.0] * 9
            elif kw["info"] == "nan_k":
                info.k[0] = float("nan")
            elif kw["info"] == "wrong_size":
                info.width, info.height = 640, 480
        rgb = _bad_image(kw["rgb"], r, d, s.frame_id) if "rgb" in kw else None
        depth = _bad_image(kw["depth"], r, d, s.frame_id) if "depth" in kw else None
        s.publish(s.next_stamp(), rgb=rgb, depth=depth, info=info)
        s.counted(s0, dropped=1, received=0)
    st = s.status()
    # nothing lost: the buffer kept its frames and its sequence
    assert node.recon.generation == gen
    assert len(node.ingest.snapshot()) == n_buf + st.frames_received - s0.frames_received
    return st.error_code, st.message


def _send_tf(env: Env, kw: dict):
    from tf2_msgs.msg import TFMessage

    from nol_ros.ros.tf import transform_stamped

    node = env.node("tf")
    s = node.stream
    T = np.eye(4)

    def tf_at(*stamps):
        s.p_tf.publish(TFMessage(transforms=[transform_stamped("cat_odom", s.frame_id, t, T)
                                             for t in stamps]))

    def wait_tf(t):
        env.g.wait(lambda: node.tf.can_transform("cat_odom", s.frame_id, t), 60,
                   "the node to receive the odom TF")

    tr0 = s.status().tracking
    if kw["kind"] == "stale":
        t_tf = s.next_stamp()
        tf_at(t_tf - 1_000_000, t_tf)
        wait_tf(t_tf)
        s.t += 5 * S                              # the odometry stopped 5 s ago
        s.publish(s.next_stamp())
    else:
        s.publish(s.next_stamp(), frame_id="")
    env.g.wait(lambda: s.status().tracking.frames_tf_refused == tr0.frames_tf_refused + 1, 60,
               "the TF refusal")
    tr = s.status().tracking
    assert tr.frames_tracked == tr0.frames_tracked
    # alive: a frame whose odometry TF is there is tracked
    t = s.next_stamp()
    tf_at(t - 1_000_000, t, t + 1_000_000)
    wait_tf(t)
    s.t = t - DT
    s.good(wait_tracked=True)
    assert s.status().tracking.frames_tf_refused == tr.frames_tf_refused
    return tr.error_code, tr.message


def _send_export(env: Env, kw: dict):
    from nol_ros.srv import ExportSequence

    env.node("rec")
    r = env.call(ExportSequence, "/cat/reconstruction/export_sequence",
                 ExportSequence.Request(**kw))
    assert not r.success, r
    return r.error_code, r.message


def _send_save_mesh(env: Env, kw: dict):
    from nol_ros.srv import SaveMesh

    env.node("rec")
    r = env.call(SaveMesh, "/cat/reconstruction/save_mesh", SaveMesh.Request(**kw))
    assert not r.success, r
    return r.error_code, r.message


def _send_select(env: Env, kw: dict):
    from nol_ros.srv import SelectViews

    env.node("vs")
    req = {"object_names": ["box"], "mesh_paths": ["box.ply"], **kw}
    r = env.call(SelectViews, "/cat/view_selection/select_views", SelectViews.Request(**req))
    assert not r.accepted, r
    return r.error_code, r.message


def _send_train(env: Env, kw: dict):
    from nol_ros.srv import TrainDetector, TrainPoseEstimator

    env.node("trainer")
    kw = dict(kw)
    pose = kw.pop("stage", "detector") == "pose"
    srv, name = ((TrainPoseEstimator, "/cat/trainer/train_pose_estimator") if pose
                 else (TrainDetector, "/cat/trainer/train_detector"))
    r = env.call(srv, name, srv.Request(**kw))
    assert not r.accepted, r
    return r.error_code, r.message


def _send_render_views(env: Env, kw: dict):
    from geometry_msgs.msg import Pose

    from nol_ros.camera import Intrinsics
    from nol_ros.ros.conversions import intrinsics_to_camera_info
    from nol_ros.srv import RenderViews

    env.node("nol")
    w, h = kw.get("size", (64, 64))
    info = intrinsics_to_camera_info(Intrinsics(500.0, 500.0, w / 2, h / 2, w, h))
    if kw.get("k") == "nan":
        info.k = [float("nan")] * 9
    pose = Pose()
    pose.position.z, pose.orientation.w = 0.8, 1.0
    r = env.call(RenderViews, "/cat/nol/render_views", RenderViews.Request(
        object_name="mug", poses=[pose] * kw.get("poses", 1), camera_info=info))
    assert not r.success and not r.images, r
    return r.error_code, r.message


def _send_reload(env: Env, kw: dict):
    from rclpy.parameter import Parameter
    from std_srvs.srv import Trigger

    node = env.node("recognizer")
    path = str(env.base / "data" / kw["models"])
    assert node.set_parameters([Parameter("models_dir", value=path)])[0].successful
    r = env.call(Trigger, "/cat_rz/recognizer/reload", Trigger.Request())
    assert not r.success
    st = node.status_msg()
    assert not st.models_loaded and st.error_code and r.message == st.message
    return st.error_code, st.message


def _send_queue_full(env: Env, kw: dict):
    """The job worker held by two jobs of the test's own (standing in for long learns: the
    real JobManager, a job function that waits for the test), so the queue (max_queued 1) is
    full for sure when the request comes; both held jobs still run to the end afterwards."""
    from nol_ros.jobs import JobState
    from nol_ros.srv import LearnObject

    node = env.node("nol")
    release, started = threading.Event(), threading.Event()

    def held(progress):
        started.set()
        assert release.wait(120), "never released"
        return "held"

    a = node.jobs.submit("learn_object", held, "held_a")
    assert started.wait(60)
    b = node.jobs.submit("learn_object", lambda p: "queued", "held_b")
    try:
        r = env.call(LearnObject, "/cat/nol/learn_object", LearnObject.Request(
            object_name="box", mesh_path="box.ply", source=2, source_path="seq"))
    finally:
        release.set()
    assert not r.accepted, r
    for j in (a, b):   # nothing lost: the running and the waiting job both finish
        assert node.jobs.wait(j.job_id, 60).state == JobState.SUCCEEDED
    return r.error_code, r.message


def _send_concurrent(env: Env, kw: dict):
    from nol_ros.srv import LearnObject

    env.node("nol")
    c = env.client(LearnObject, "/cat/nol/learn_object")
    env.g.wait(c.service_is_ready, 30, "learn_object")
    names = ["..", ".", "a/b", "/etc", "_models", "x" * 65, "", ".hidden"]
    futs = [c.call_async(LearnObject.Request(object_name=names[i % len(names)],
                                             mesh_path="box.ply", source=2, source_path="seq"))
            for i in range(kw["n"])]
    env.g.wait(lambda: all(f.done() for f in futs), 120, "every concurrent reply")
    rs = [f.result() for f in futs]
    assert all(not r.accepted and r.error_code == "BAD_PATH" for r in rs), rs
    return rs[0].error_code, rs[0].message


def _send_concurrent_exports(env: Env, kw: dict):
    """4 exports to one folder, a SaveMesh and status queries at once: every call answered,
    the exports are serialised (one writes, the others find it unchanged or write the same),
    and the folder holds one complete export."""
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.srv import ExportSequence, GetBufferStatus, SaveMesh

    node = env.node("rec")
    n = node.stream.status().frames_received
    ex = env.client(ExportSequence, "/cat/reconstruction/export_sequence")
    me = env.client(SaveMesh, "/cat/reconstruction/save_mesh")
    st = env.client(GetBufferStatus, "/cat/reconstruction/get_buffer_status")
    for c in (ex, me, st):
        env.g.wait(c.service_is_ready, 30, c.srv_name)
    futs = [ex.call_async(ExportSequence.Request(output_dir="conc")) for _ in range(4)]
    futs += [me.call_async(SaveMesh.Request(path="conc.ply"))]
    futs += [st.call_async(GetBufferStatus.Request()) for _ in range(4)]
    env.g.wait(lambda: all(f.done() for f in futs), 180, "every concurrent reply")
    rs = [f.result() for f in futs]
    assert all(r.success and r.frames == n for r in rs[:4]), rs[:4]
    assert sum(not r.unchanged for r in rs[:4]) >= 1, rs[:4]
    assert rs[4].success and rs[4].triangles > 100, rs[4]
    assert all(r.frames_received == n for r in rs[5:])
    out = env.base / "export" / "conc"
    assert len(read_bop_scene(out).frames) == n
    assert not (env.base / "export" / ".conc.tmp").exists()
    shutil.rmtree(out)                     # this case's own output: gone again
    (env.base / "export" / "conc.ply").unlink()
    return "success", f"{n} frames exported 4 times at once"


# -- node cases ---------------------------------------------------------------------------------
def _alive(env: Env, case: Case) -> None:
    """The follow-up good call of the node the case went to."""
    from nol_ros.srv import GetJobStatus

    kind = case.send[0]
    if kind in ("learn", "render_views", "queue_full", "concurrent"):
        st = env.call(GetJobStatus, "/cat/nol/get_job_status",
                      GetJobStatus.Request(job_id=env.node("nol").canary))
        assert st.found and st.error_code == "BAD_FILE", st
    elif kind in ("frame", "export", "save_mesh", "concurrent_exports"):
        env.node("rec").stream.good()
    elif kind == "select":
        st = env.call(GetJobStatus, "/cat/view_selection/get_job_status",
                      GetJobStatus.Request())
        assert st.error_code == "UNKNOWN_JOB" and st.message == "no job yet", st
    elif kind == "train":
        from nol_ros.recognition.pipeline import train_plan

        st = env.call(GetJobStatus, "/cat/trainer/get_job_status", GetJobStatus.Request())
        assert st.error_code == "UNKNOWN_JOB" and st.message == "no job yet", st
        # ... and the node's check of a good request still passes (the learnt 'mug')
        assert train_plan(env.node("trainer").cfg.train, ["mug"]).names == ["mug"]
    elif kind == "reload":
        from std_srvs.srv import Trigger

        # the models folder named again: the node answers and says what is missing
        node = env.node("recognizer")
        r = env.call(Trigger, "/cat_rz/recognizer/reload", Trigger.Request())
        assert not r.success and node.cfg.models_dir in r.message, r
    # tf, kill9, disk_full: checked inside their send


SENDERS = {"learn": _send_learn, "frame": _send_frame, "tf": _send_tf, "export": _send_export,
           "save_mesh": _send_save_mesh, "select": _send_select, "train": _send_train,
           "render_views": _send_render_views, "reload": _send_reload,
           "queue_full": _send_queue_full, "concurrent": _send_concurrent,
           "concurrent_exports": _send_concurrent_exports}


NODE_OF = {"learn": "nol", "render_views": "nol", "queue_full": "nol", "concurrent": "nol",
           "frame": "rec", "export": "rec", "save_mesh": "rec", "concurrent_exports": "rec",
           "tf": "tf", "select": "vs", "train": "trainer", "reload": "recognizer"}


@pytest.mark.ros
@pytest.mark.parametrize("case", [c for c in NODE_CASES if c.send[0] in SENDERS],
                         ids=lambda c: c.id)
def test_node_case(case, env, base):
    kind, kw = case.send
    env.node(NODE_OF[kind])      # started (and what it writes at start written) before
    before = tree(base, skip=OWN_FOLDERS)
    code, message = SENDERS[kind](env, kw)
    assert code == case.code and case.text in message, (case.id, code, message[:300])
    assert len(message) <= MAX_MESSAGE_CHARS, (case.id, len(message))   # a bounded reply
    _alive(env, case)
    assert_nothing_lost(before, tree(base, skip=OWN_FOLDERS), case)


# -- cases with a node process of their own --------------------------------------------------------
def _start_node(exe: str, ns: str, ps: dict, fsize: int = 0) -> subprocess.Popen:
    def limit():   # a full disk: no file may grow beyond fsize bytes (EFBIG, signal ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    args = [str(BIN / exe), "--ros-args", "--disable-external-lib-logs", "-r", f"__ns:={ns}"]
    for k, v in ps.items():
        args += ["-p", f"{k}:={v}"]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=limit if fsize else None)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            return proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.communicate()[0]


@pytest.mark.ros
def test_node_case_kill9_mid_learn_then_restart(env, base):
    """A nol node process re-learning 'mug' is killed with SIGKILL while the job runs: the
    learnt 'mug' is exactly as before; the node started again answers the old job id with
    UNKNOWN_JOB (never another job's status), and a new learn of 'mug' runs (cancelled here)
    and leaves no staging folder behind."""
    from nol_ros.jobs import JobState
    from nol_ros.msg import JobProgress
    from nol_ros.nodes.nol_node import NolNode
    from nol_ros.srv import CancelJob, GetJobStatus, LearnObject

    case = BY_ID["KILL9-LEARN"]
    ws = base / "k9ws"
    _fake_learnt(ws, "mug", 1)
    before = tree(base, skip=OWN_FOLDERS)
    progress = []
    env.cli.create_subscription(JobProgress, "/cat_k9/nol/progress", progress.append, 100)
    proc = _start_node("nol_node", "/cat_k9", {"data_root": str(base / "data"),
                                               "learn.workspace_root": str(ws),
                                               "learn.render.enabled": "false"})
    try:
        r = env.call(LearnObject, "/cat_k9/nol/learn_object", LearnObject.Request(
            object_name="mug", mesh_path="box.ply", source=2, source_path="tum"))
        assert r.accepted, r
        # killed while the job runs past its start (its first stages come by the dozen: one
        # missed while the subscription matches is no matter)
        env.g.wait(lambda: any(p.job_id == r.job_id and p.state == JobProgress.STATE_RUNNING
                               and p.stage not in ("", "loading") for p in progress), 120,
                   "the job to run")
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
    finally:
        out = _stop(proc)
    assert proc.returncode == -signal.SIGKILL, out
    print(f"killed in stage {progress[-1].stage}; staging left: {(ws / '.mug.new').exists()}")
    mug = tree(ws / "mug")
    assert mug == {k.removeprefix("k9ws/mug/"): v for k, v in before.items()
                   if k.startswith("k9ws/mug/")}, "the learnt object changed"
    # the node again, same roots (in another namespace: DDS lists the dead process's services
    # until their lease runs out, and a request matched only to those would wait for ever)
    node = env.g.add(NolNode("nol", namespace="/cat_k9r", context=env.ctx,
                             parameter_overrides=params(data_root=str(base / "data"),
                                                        learn__workspace_root=str(ws),
                                                        learn__render__enabled=False)))
    st = env.call(GetJobStatus, "/cat_k9r/nol/get_job_status",
                  GetJobStatus.Request(job_id=r.job_id))
    assert not st.found and st.error_code == case.code and case.text in st.message, st
    again = env.call(LearnObject, "/cat_k9r/nol/learn_object", LearnObject.Request(
        object_name="mug", mesh_path="box.ply", source=2, source_path="tum"))
    assert again.accepted and again.job_id != r.job_id, again
    env.g.wait(lambda: node.jobs.get(again.job_id).state == JobState.RUNNING, 60,
               "the new learn to start")
    assert env.call(CancelJob, "/cat_k9r/nol/cancel_job",
                    CancelJob.Request(job_id=again.job_id)).success
    assert node.jobs.wait(again.job_id, 120).state == JobState.CANCELLED
    # staging gone, 'mug' as it was
    assert_nothing_lost(before, tree(base, skip=OWN_FOLDERS), case)


@pytest.mark.ros
def test_node_case_time_budget(env, base):
    """A nol node with max_job_s = 1 s re-learns 'mug' from the TUM piece (tens of seconds of
    work on any machine): the job fails with TIME_BUDGET at its first progress report past the
    budget, the learnt 'mug' is exactly as before (no staging left) and the node serves the
    next request."""
    from nol_ros.jobs import JobState
    from nol_ros.nodes.nol_node import NolNode
    from nol_ros.srv import GetJobStatus, LearnObject

    case = BY_ID["TIME-BUDGET"]
    ws = base / "tbws"
    _fake_learnt(ws, "mug", 1)
    before = tree(base, skip=OWN_FOLDERS)
    node = env.g.add(NolNode("nol", namespace="/cat_tb", context=env.ctx,
                             parameter_overrides=params(data_root=str(base / "data"),
                                                        max_job_s=1.0,
                                                        learn__workspace_root=str(ws),
                                                        learn__render__enabled=False)))
    r = env.call(LearnObject, "/cat_tb/nol/learn_object", LearnObject.Request(
        object_name="mug", mesh_path="box.ply", source=2, source_path="tum"))
    assert r.accepted, r
    info = node.jobs.wait(r.job_id, 600)
    assert info.state == JobState.FAILED, info
    st = env.call(GetJobStatus, "/cat_tb/nol/get_job_status", GetJobStatus.Request(job_id=r.job_id))
    assert st.error_code == case.code and case.text in st.message, st
    print(f"stopped in stage '{info.stage}' after {info.finished_s - info.started_s:.1f} s")
    assert_nothing_lost(before, tree(base, skip=OWN_FOLDERS), case)
    again = env.call(LearnObject, "/cat_tb/nol/learn_object", LearnObject.Request(
        object_name="..", mesh_path="box.ply", source=2, source_path="tum"))
    assert not again.accepted and again.error_code == "BAD_PATH", again   # still serving


@pytest.fixture(scope="module")
def full_disk(env, base):
    """The reconstruction node as a process whose files cannot grow beyond 64 kB (RLIMIT_FSIZE:
    the OS refuses the write as on a full disk), with 4 tracked frames, and in its export_root
    a previous export and a previous mesh (written by this process, without the limit)."""
    import open3d as o3d

    from nol_ros.streaming.live import export_sequence

    root = base / "full_disk"
    root.mkdir()
    rec = env.node("rec")
    export_sequence(rec.ingest.snapshot(), rec.live.snapshot(), root / "prev", version="old")
    o3d.io.write_triangle_mesh(str(root / "scene.ply"), o3d.geometry.TriangleMesh.create_box())
    ns = "/cat_full"
    proc = _start_node("reconstruction_node", ns, {
        "tracking.odometry_mode": "none", "camera_info_wait_s": 30.0, "publish_tf": "false",
        "keyframe_images": "false", "tracker.integrate_every": 1, "export_root": str(root)},
        fsize=65536)
    try:
        s = Stream(env, _InfoProbe(env, ns), ns, "full_cam", info_subscribers=2)
        s.start(tracked=4)
        yield proc, s, root, ns
    finally:
        out = _stop(proc)
        print(out)
    assert "Traceback" not in out, out


@pytest.mark.ros
@pytest.mark.parametrize("what", ["export", "mesh"])
def test_node_case_disk_full(what, full_disk, env, base):
    """Replacing a previous export / mesh with the disk full fails with DISK_WRITE_FAILED naming
    the file; the previous one is intact, nothing half-written is left, the node keeps
    serving."""
    from nol_ros.srv import ExportSequence, SaveMesh

    proc, s, root, ns = full_disk
    case = BY_ID[f"DISK-FULL-{'EXPORT' if what == 'export' else 'MESH'}"]
    before = tree(base, skip=OWN_FOLDERS)
    n = s.status().frames_received
    if what == "export":
        r = env.call(ExportSequence, f"{ns}/reconstruction/export_sequence",
                     ExportSequence.Request(output_dir="prev"))
    else:
        r = env.call(SaveMesh, f"{ns}/reconstruction/save_mesh",
                     SaveMesh.Request(path="scene.ply"))
    assert not r.success and r.error_code == case.code and case.text in r.message, r
    assert str(root) in r.message, r.message        # it names the file
    print(f"{case.id}: {r.message}")
    s.good()                                        # alive: the next pair is taken
    assert proc.poll() is None and s.status().frames_received == n + 1
    # the previous export / mesh intact, nothing half-written left
    assert_nothing_lost(before, tree(base, skip=OWN_FOLDERS), case)


class _InfoProbe:
    """Stands in for a node object in Stream.publish: records the CameraInfo the node process
    would see (a subscription in this process on the same topic), so pairs still go after
    their CameraInfo."""

    def __init__(self, env: Env, ns: str):
        from sensor_msgs.msg import CameraInfo

        from nol_ros.ros.qos import sensor_qos

        self.recon = SimpleNamespace(info=None)   # where Stream.publish looks, as on the node
        env.cli.create_subscription(CameraInfo, f"{ns}/camera/rgb/camera_info",
                                    lambda m: setattr(self.recon, "info", m), sensor_qos())


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_batch(base):
    """Every CLI case started at once, when the module starts (the node cases mostly wait on
    DDS: the CLI processes run meanwhile), each in a folder of its own (working directory and
    workspace, with a learnt 'mug'). -> ({id: (process, its folder's tree)}, the trees of
    data/ and outside/ before)."""
    d = base / "data"
    (base / "cli").mkdir()
    (base / "cli" / "afile").write_text("a file")
    subs = {"box": d / "box.ply", "tum": d / "tum", "tum8": d / "tum8", "data": d,
            "file": base / "cli" / "afile"}
    shared = {n: tree(base / n) for n in ("data", "outside")}
    runs = {}
    for c in CLI_CASES:
        wd = base / "cli" / c.id
        wd.mkdir()
        _fake_learnt(wd, "mug", 1)
        args = [a.format(**subs) for a in c.send[1]["args"]]
        if args[0] in ("learn", "train-detector", "train-pose") and "--workspace" not in args:
            args += ["--workspace", str(wd)]
        if args[0] in ("learn", "train-detector", "train-pose", "evaluate"):
            args += ["--quiet"]
        fsize = c.send[1].get("fsize", 0)

        def limit(fsize=fsize):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

        runs[c.id] = (subprocess.Popen([str(BIN / "nol-ros"), *args], cwd=wd, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       preexec_fn=limit if fsize else None), tree(wd))
    yield runs, shared
    for p, _ in runs.values():
        if p.poll() is None:
            p.kill()


@pytest.fixture(scope="module")
def cli_runs(cli_batch, base):
    """The CLI cases' results: {id: (exit code, stdout, stderr, its folder before, after)},
    and the trees of data/ and outside/ before and after."""
    runs, shared = cli_batch
    out = {}
    for cid, (p, wd_before) in runs.items():
        so, se = p.communicate(timeout=600)
        out[cid] = (p.returncode, so, se, wd_before, tree(base / "cli" / cid))
    return out, shared, {n: tree(base / n) for n in shared}


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_cli_case(case, cli_runs):
    runs, before, after = cli_runs
    code, out, err, wd_before, wd_after = runs[case.id]
    lines = [ln for ln in err.splitlines() if ln.startswith("nol-ros ")]
    assert code == case.exit, (case.id, code, out, err)
    assert "Traceback" not in err and len(lines) == 1, (case.id, err)
    assert lines[0].startswith(f"nol-ros {case.send[1]['args'][0]}: ")
    assert f"[{case.code}]" in lines[0] and case.text in lines[0], (case.id, lines[0])
    assert err.strip().splitlines()[-1] == lines[0], (case.id, err)   # the last word
    # nothing lost: its own folder (with the learnt 'mug'), the inputs and the outside folder
    assert_nothing_lost(wd_before, wd_after, case)
    for n in before:
        assert_nothing_lost(before[n], after[n], case)

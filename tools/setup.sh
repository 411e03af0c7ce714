#!/usr/bin/env bash
# One-command, idempotent set-up of nol_ros in ./.venv (Python 3.11, CPU; CUDA used if present).
# Steps are skipped when their inputs did not change (stamps under .venv/.nol_stamps), so a
# second run takes a few seconds. Every step says what it does; a failure names the step.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NOL_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.nol_stamps"
PY="$VENV/bin/python"
START=$(date +%s)

step() { echo "[setup] $*"; }
fail() { echo "[setup] FAILED at step: $CURRENT_STEP" >&2; echo "[setup] see the output above; fix and re-run 'make setup'" >&2; }
trap fail ERR
CURRENT_STEP="start"

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
stamp_set() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# 1. venv --------------------------------------------------------------------------------------
CURRENT_STEP="create venv"
if [[ ! -x "$PY" ]]; then
  PYTHON_BIN="${PYTHON:-}"
  if [[ -z "$PYTHON_BIN" ]]; then
    for c in python3.11 python3; do
      if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        PYTHON_BIN="$c"; break
      fi
    done
  fi
  [[ -n "$PYTHON_BIN" ]] || { echo "[setup] Python 3.11 is required (ROS 2 Kilted wheels are cp311); set PYTHON=/path/to/python3.11" >&2; exit 1; }
  step "creating $VENV with $PYTHON_BIN"
  "$PYTHON_BIN" -m venv "$VENV"
fi

# 2. Python packages (pinned in requirements/) ---------------------------------------------------
CURRENT_STEP="pip install requirements"
REQ_HASH=$(hash_of "$ROOT/requirements/base.txt" "$ROOT/requirements/constraints.txt")
if ! stamp_ok pip "$REQ_HASH"; then
  # The packages take ~6.7 GB in the venv (torch 2.14.1's x86_64 wheel brings its CUDA
  # libraries, 4 GB of it). A full disk fails deep inside pip with "[Errno 28] No space left
  # on device"; say so first, with the numbers and the fix.
  NEED_MB="${NOL_SETUP_NEED_MB:-8192}"
  FREE_KB=$(df -Pk "$VENV" | awk 'NR==2 {print $4}')
  if [[ -n "$FREE_KB" && "$FREE_KB" -lt $((NEED_MB * 1024)) ]]; then
    echo "[setup] not enough disk space for the Python packages: $((FREE_KB / 1024)) MB free" \
         "on the file system of $VENV, ~$((NEED_MB / 1024)) GB needed. Free space there (old clones' .venv, build/," \
         ".nol_demo/ folders, /tmp/pytest-of-*), or put the venv on a larger disk:" \
         "make test VENV=/path/to/venv (the same VENV= for every make command)" >&2
    false
  fi
  step "installing Python packages (torch, open3d, ROS 2 Kilted wheels, ...): ~2-3 min cold"
  # --no-compile: byte-compiling every file of torch, open3d, ... took 37 s of the ~110 s; the
  # few hundred modules a run imports are compiled on first import instead (~1.5 s, measured;
  # the Makefile unexports PYTHONDONTWRITEBYTECODE so that Python keeps what it compiled)
  "$PY" -m pip install --disable-pip-version-check -q --no-compile \
      -r "$ROOT/requirements/base.txt" -c "$ROOT/requirements/constraints.txt"
  stamp_set pip "$REQ_HASH"
else
  step "Python packages up to date"
fi

# 2b. Debian's chromium for the report's headless-browser test (test_report_browser drives it
# with playwright; `playwright install`'s own browser download is not reachable). Only when the
# binary is missing, so a second run costs one file test. No apt: say so and go on (that test
# then fails, naming the fix).
CURRENT_STEP="install Debian chromium"
CHROMIUM="${NOL_CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$CHROMIUM" ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then
    if [[ -t 0 ]]; then SUDO="sudo"; else SUDO="sudo -n"; fi
  fi
  APT_LOG="$VENV/.nol_apt_chromium.log"
  if ! command -v apt-get >/dev/null; then
    step "WARNING: $CHROMIUM is missing and apt-get is not available: install Chromium by hand" \
         "(or set NOL_CHROMIUM=/path/to/chromium); test/test_report_browser.py fails without it"
  elif [[ $(id -u) -ne 0 && -z "$SUDO" ]]; then
    step "WARNING: $CHROMIUM is missing and installing it needs root (no sudo here): run" \
         "'apt-get install chromium' as root; test/test_report_browser.py fails without it"
  elif step "installing Debian chromium with apt-get (for the report's browser test, ~1-2 min)" &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q > "$APT_LOG" 2>&1 &&
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         chromium >> "$APT_LOG" 2>&1 && [[ -x "$CHROMIUM" ]]; then
    step "chromium installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
  else
    tail -20 "$APT_LOG" 2>/dev/null || true
    step "WARNING: apt-get failed or did not provide $CHROMIUM (log: $APT_LOG); continuing, but" \
         "test/test_report_browser.py fails until $CHROMIUM exists"
  fi
fi

SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYINC=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$PY" -c 'import numpy; print(numpy.get_include())')

# 3. The ROS wheels' CMake exports hard-code the include dirs of the machine they were built on.
CURRENT_STEP="fix CMake include paths of the ROS wheels"
if grep -rlq -e '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' 2>/dev/null; then
  step "rewriting include paths in the ROS wheels' CMake files"
  grep -rl -e '/opt/python/cp311-cp311' "$VENV/share" --include='*.cmake' | while read -r f; do
    sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g" \
           -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" "$f"
  done
fi

build_interfaces() {  # $1 = source dir, $2 = name, extra cmake args...
  local src="$1" name="$2"; shift 2
  local bld="$VENV/.nol_build/$name"
  rm -rf "$bld"; mkdir -p "$VENV/.nol_build"
  AMENT_PREFIX_PATH="$VENV" cmake -S "$src" -B "$bld" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DCMAKE_PREFIX_PATH="$VENV" -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF "$@" > "$bld.log" 2>&1 \
    || { tail -40 "$bld.log"; return 1; }
  AMENT_PREFIX_PATH="$VENV" cmake --build "$bld" -j 2 >> "$bld.log" 2>&1 || { tail -40 "$bld.log"; return 1; }
  cmake --install "$bld" >> "$bld.log" 2>&1 || { tail -40 "$bld.log"; return 1; }
}

# 4. tf2_msgs: only where no real one is importable (the PyPI wheels have none) --------------
CURRENT_STEP="build tf2_msgs"
if ! "$PY" -c 'import tf2_msgs.msg' >/dev/null 2>&1; then
  step "building tf2_msgs interfaces (~25 s)"
  build_interfaces "$ROOT/tools/interfaces/tf2_msgs" tf2_msgs
  "$PY" -c 'from tf2_msgs.msg import TFMessage' || { echo "[setup] tf2_msgs built but does not import" >&2; false; }
fi

# 5. nol_ros's own interfaces ---------------------------------------------------------------------
CURRENT_STEP="build nol_ros interfaces"
IF_HASH=$(hash_of "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv "$ROOT"/action/*.action "$ROOT/CMakeLists.txt" "$ROOT/package.xml")
if ! stamp_ok interfaces "$IF_HASH" || [[ ! -d "$SITE/nol_ros/msg" ]]; then
  step "building nol_ros msg/srv/action interfaces (~40 s)"
  build_interfaces "$ROOT" nol_ros -DNOL_ROS_INSTALL_PYTHON_SOURCES=OFF
  # The generated package must not shadow the source package: the source's __init__.py extends
  # its __path__ to site-packages/nol_ros (pkgutil.extend_path), where msg/srv/action live.
  rm -f "$SITE/nol_ros/__init__.py"
  # ...and the egg-info CMake wrote for it must go, or pip would treat the generated files as an
  # old nol_ros install and delete them when it installs the editable package.
  rm -rf "$SITE"/nol_ros-*.egg-info
  stamp_set interfaces "$IF_HASH"
fi

# 6. nol_ros itself, editable, with its console scripts ----------------------------------------
CURRENT_STEP="install nol_ros (editable)"
PKG_HASH=$(hash_of "$ROOT/setup.py")
if ! stamp_ok package "$PKG_HASH"; then
  step "installing nol_ros (editable) and its console scripts"
  "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
      -e "$ROOT" --config-settings editable_mode=compat
  stamp_set package "$PKG_HASH"
fi

CURRENT_STEP="check imports"
# The full check imports torch and open3d (~5 s, most of a no-op run): only after something was
# installed or built. Otherwise a light check: the package, its interfaces, rclpy, tf2_msgs, and
# that torch/open3d are still installed.
CHECK_HASH="$REQ_HASH-$IF_HASH-$PKG_HASH"
if ! stamp_ok imports "$CHECK_HASH"; then
  "$PY" - <<'PYCHECK'
import nol_ros, nol_ros.msg, nol_ros.srv, nol_ros.action  # noqa: F401
import rclpy, tf2_msgs.msg, torch, open3d  # noqa: F401
print(f"[setup] ok: nol_ros {nol_ros.__version__}, torch {torch.__version__} "
      f"(cuda={torch.cuda.is_available()}), open3d {open3d.__version__}")
PYCHECK
  stamp_set imports "$CHECK_HASH"
else
  "$PY" - <<'PYCHECK'
import importlib.util
import nol_ros, nol_ros.msg, nol_ros.srv, nol_ros.action  # noqa: F401
import rclpy, tf2_msgs.msg  # noqa: F401
missing = [m for m in ("torch", "torchvision", "open3d", "cv2", "rosbags", "playwright")
           if importlib.util.find_spec(m) is None]
if missing:
    raise SystemExit(f"[setup] installed packages are missing: {missing}; delete "
                     ".venv/.nol_stamps/pip and re-run make setup")
print(f"[setup] ok: nol_ros {nol_ros.__version__} (torch/open3d checked at install)")
PYCHECK
fi
trap - ERR
echo "[setup] done in $(( $(date +%s) - START )) s"

"""Import TensorFlow without its C++ start-up noise, so a run prints our lines.

TF_CPP_MIN_LOG_LEVEL silences TF's own logging, but a few lines (oneDNN, CUDA stubs,
cuInit) are written by the C++ runtime before logging is configured. We send file
descriptor 2 to a temporary file while TF loads and initialises its devices, then replay
every line that is not such a log line (a real error still shows).
"""

import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages before absl)")


def import_tensorflow():
    """Import and return tensorflow with its device set-up done quietly."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()  # device init prints its own lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            for line in log.read().decode(errors="replace").splitlines(keepends=True):
                if not NOISE.match(line):
                    sys.stderr.write(line)
    return tf

"""LEARN-TF: LLM knowledge adaptation for recommendation on the TensorFlow stack."""

import os as _os
import warnings as _warnings

# TFRS 0.7.7 needs `tf.keras` to be Keras 2 (tf_keras). This must be set before
# TensorFlow is first imported anywhere in the process, so the package sets it
# itself instead of relying on the user's shell. keras-hub keeps using Keras 3
# through `import keras`, which this variable does not affect.
_os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

# google-api-core (pulled in by TFX) warns on every import that Python 3.10 is
# old; TFX 1.16 requires Python < 3.11, so the warning is noise here.
_warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.api_core\..*")

__version__ = "0.1.0"

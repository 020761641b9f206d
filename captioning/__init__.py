"""Reproducible image captioning: ResNet50 features, a BiLSTM + attention decoder, DVC and MLflow."""

import os

# TensorFlow's C++ start-up chatter (oneDNN notices, no-GPU warnings) buries the pipeline's own
# output; a user who wants it back sets TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

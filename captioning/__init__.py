"""Reproducible image captioning: ResNet50 features, a BiLSTM + attention decoder, DVC and MLflow."""

__version__ = "0.1.0"

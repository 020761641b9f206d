"""Thin DVC stage scripts: read params.yaml, call the captioning package, write outputs."""

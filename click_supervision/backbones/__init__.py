"""Keras conv trunks and the sources of their pretrained weights."""

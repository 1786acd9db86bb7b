"""Unit tests, one package per component."""

"""Utilities for users and for packages that build on ssad."""

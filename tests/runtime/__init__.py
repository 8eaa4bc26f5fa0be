"""Tests for runtime/."""

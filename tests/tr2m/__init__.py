"""Tests for tr2m/."""

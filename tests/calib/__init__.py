"""Tests for calib/."""

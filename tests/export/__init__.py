"""Tests for export/."""

"""Tests for the feature extractors."""

"""Tests of runtime.scale: tr2m-serve over real HTTP on a real local Ray, its page in a real
headless Chromium, and tr2m-batch on real local Ray clusters (one node and several)."""

"""Runtime: torch-free TR2M inference (engines, tokenizer, caption cache, video loop)."""

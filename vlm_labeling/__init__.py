"""vlm_labeling package."""

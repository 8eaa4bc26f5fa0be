"""Scene captions in TR2M's format (`tr2m-caption`): descriptions from a vision-language model,
object lists from a panoptic segmentation model, caption schedules for videos by scene."""

"""DWPose extraction, pose alignment to the reference body, and skeleton drawing."""

"""Frame arithmetic without torch: normalisation, post-processing to targets, tracking, sizes."""

"""Operating the hub: health, metrics and alerts."""

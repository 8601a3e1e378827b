"""Label Studio ML backend serving EmerDiff segmentations (Flask app, gunicorn entry point)."""

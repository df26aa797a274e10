"""Data quality checks and scores, anomaly detection, alert channels."""
